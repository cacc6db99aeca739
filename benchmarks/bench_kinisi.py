"""kinisi's estimator of self-diffusion next to ionmix's, on one trajectory (issue 26).

A random walk of rigid library ions with known D (`tests/synthetic_md.walk_run`: the truth
is known), saved as a LAMMPS dump with its positions wrapped into the box and a data file
(the route a user's LAMMPS run takes). ionmix reads it through MDAnalysis and unwraps it
(`ionmix props transport --topology`); kinisi (Bayesian regression of the MSD with its
covariance, McCluskey et al., J. Chem. Theory Comput. 2024) reads the same wrapped frames
through ASE, the molecular centres of mass of each species, from the start of ionmix's
fit window. Prints one JSON object: per species the true D, ionmix's D ± its standard
error, kinisi's D ± its posterior standard deviation, and how many combined standard
deviations apart the two are.

    pip install -e '.[kinisi]'
    .venv/bin/python benchmarks/bench_kinisi.py --frames 600 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

COUNTS = {"Li": 8, "EMIM": 12, "PF6": 20}
D_A2_PER_PS = {"Li": 0.02, "EMIM": 0.05, "PF6": 0.03}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--box-A", type=float, default=20.0)
    args = parser.parse_args()

    import ase.io
    import MDAnalysis as mda  # noqa: F401 - the reader route needs it

    import test_foreign
    from ionmix.properties.foreign import Topology
    from ionmix.properties.transport import compute_transport, prepare_transport
    from synthetic_md import walk_run
    from test_foreign import _universe, _wrapped, _write_dump

    test_foreign.BOX_A = args.box_A
    work = Path(tempfile.mkdtemp(prefix="bench-kinisi-"))
    path = walk_run(work / "walk", COUNTS, D_A2_PER_PS, n_frames=args.frames,
                    box_A=args.box_A, seed=args.seed)
    frames = ase.io.read(path, ":")
    u = _universe(frames, charges=True)
    u.atoms.positions = _wrapped(frames[0])
    u.trajectory.ts.data["molecule_tag"] = frames[0].arrays["mol_id"] + 1
    u.atoms.write(work / "system.data")
    _write_dump(work / "run.lammpstrj", frames, list(range(len(frames))))
    top = Topology(work / "system.data", ions=tuple(COUNTS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = compute_transport(prepare_transport(work / "run.lammpstrj", topology=top,
                                                   temperature_K=300.0, time_step_ps=1.0))
    wrapped = [f.copy() for f in frames]
    for f in wrapped:
        f.wrap()
    result = {"frames": args.frames, "seed": args.seed, "box_A": args.box_A, "species": {}}
    for name in COUNTS:
        d = ours.diffusion_cm2_per_s[name]
        k_mean, k_std = _kinisi(wrapped, name, d["fit_window_ps"][0])
        true = _barycentric_true(name)
        result["species"][name] = {
            "true_cm2_per_s": true, "ionmix_cm2_per_s": d["value"],
            "ionmix_err_cm2_per_s": d["error"], "kinisi_cm2_per_s": k_mean,
            "kinisi_std_cm2_per_s": k_std,
            "difference_in_combined_sigma": abs(d["value"] - k_mean) / np.hypot(d["error"],
                                                                                k_std)}
        print(json.dumps({name: result["species"][name]}), flush=True)
    print(json.dumps(result, indent=2))


def _kinisi(frames, name: str, start_ps: float) -> tuple[float, float]:
    """kinisi's D (cm²/s: mean and standard deviation of the posterior) of the centres of
    mass of the molecules of `name`."""
    import scipp as sc
    from kinisi.analyze import DiffusionAnalyzer

    mol = frames[0].arrays["mol_id"]
    names = frames[0].arrays["ion_name"]
    ids = np.unique(mol[names == name])
    indices = [list(np.flatnonzero(mol == m)) for m in ids]
    masses = frames[0].get_masses()[indices[0]]
    analyzer = DiffusionAnalyzer.from_ase(
        frames, time_step=sc.scalar(1.0, unit="ps"), step_skip=sc.scalar(1),
        specie_indices=sc.array(dims=["particle", "atoms in particle"], values=indices),
        masses=sc.array(dims=["atoms in particle"], values=masses), progress=False)
    analyzer.diffusion(sc.scalar(float(start_ps), unit="ps"), progress=False,
                       random_state=np.random.RandomState(0))
    samples = sc.to_unit(analyzer.D, "cm^2/s").values
    return float(np.mean(samples)), float(np.std(samples))


def _barycentric_true(name: str) -> float:
    """The walk's D seen from the system's centre of mass, cm²/s (tests/test_transport)."""
    from test_transport import barycentric_d

    return barycentric_d(COUNTS, D_A2_PER_PS, name)


if __name__ == "__main__":
    main()
