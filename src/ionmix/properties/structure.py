"""Liquid structure from MD frames: radial distribution functions between atom types or
molecular centres, running coordination numbers, and the first-shell coordination of each
ion, per frame and averaged.

Selections name what is counted (ion names as in the frames' molecule information):

* ``Li``: every atom of element Li;
* ``F@PF6``: F atoms of PF6 molecules;
* ``@EMIM``: the centres of mass of EMIM molecules.

A pair is ``"A-B"`` (e.g. ``"Li-F@PF6"``, ``"@EMIM-@PF6"``). Distances use the minimum image
(any cell); pairs within one molecule are left out (the RDFs are *intermolecular*), which
is what coordination of one ion by others means. The shape is prepare
(`prepare_structure`: parse the pairs, index the atoms) → per frame (`_frame_histograms`:
minimum-image distances, one histogram per central particle) → conclude
(`conclude_structure`: g(r), n(r), the first-shell radius at the first minimum after the
first peak of g, and coordination numbers per frame with block errors).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.errors import InputError
from ionmix.stats import block_average

__all__ = ["ParticleSelection", "StructureAnalysisError", "StructureResult", "parse_pair",
           "structure_analysis"]


class StructureAnalysisError(InputError):
    """A pair that names nothing in the frames, or frames that cannot give an RDF."""


@dataclass(frozen=True)
class ParticleSelection:
    """What one side of a pair counts: atoms of `element` (in molecules named `ion`, when
    given), or centres of mass of the molecules named `ion` when `element` is None."""

    element: str | None
    ion: str | None

    @classmethod
    def parse(cls, text: str) -> ParticleSelection:
        """``"Li"``, ``"F@PF6"`` or ``"@EMIM"``."""
        element, sep, ion = text.strip().partition("@")
        if (not element and not ion) or (sep and not ion):
            raise StructureAnalysisError(f"selection {text!r}: use ELEMENT, ELEMENT@ION or @ION")
        return cls(element or None, ion or None)

    def __str__(self) -> str:
        return f"{self.element or ''}{'@' + self.ion if self.ion else ''}"


def parse_pair(text: str) -> tuple[ParticleSelection, ParticleSelection]:
    """``"Li-F@PF6"`` → two selections."""
    parts = text.split("-")
    if len(parts) != 2:
        raise StructureAnalysisError(f"pair {text!r}: use A-B, e.g. Li-F@PF6 or @EMIM-@PF6")
    return ParticleSelection.parse(parts[0]), ParticleSelection.parse(parts[1])


@dataclass(frozen=True)
class _Group:
    """Particles of a selection in one frame layout: atom indices per particle (one atom,
    or a molecule's atoms) and their molecule index."""

    members: tuple[np.ndarray, ...]
    mol: np.ndarray

    def positions(self, frame: Atoms, masses: np.ndarray) -> np.ndarray:
        """Positions of the particles (atoms, or molecular centres of mass), (n, 3), Å."""
        pos = frame.positions
        return np.array([pos[m[0]] if m.size == 1 else
                         np.average(pos[m], axis=0, weights=masses[m]) for m in self.members])


def _group(frame: Atoms, sel: ParticleSelection, mol: np.ndarray, names: np.ndarray) -> _Group:
    symbols = np.array(frame.get_chemical_symbols())
    if sel.element is None:
        ids = np.unique(mol[names == sel.ion])
        members = tuple(np.flatnonzero(mol == m) for m in ids)
        group = _Group(members, ids)
    else:
        mask = symbols == sel.element
        if sel.ion is not None:
            mask &= names == sel.ion
        idx = np.flatnonzero(mask)
        group = _Group(tuple(idx[:, None]), mol[idx])
    if not group.members:
        raise StructureAnalysisError(f"selection {sel} matches nothing in the frames (elements "
                             f"{' '.join(sorted(set(symbols)))}; ions "
                             f"{' '.join(sorted(set(names)))})")
    return group


@dataclass
class StructureResult:
    """RDFs and coordination numbers per pair.

    Attributes:
        pairs: name → {"r_A" (bin centres), "g", "coordination" (running n(r), per central
            particle), "first_shell_A" (first minimum of g after its first peak, or None),
            "first_shell_coordination": {"value", "error", "distribution" (count →
            fraction of central particles)}, "per_frame_coordination" (mean per frame)}.
        n_frames, r_max_A, bin_width_A: what was analysed.
    """

    pairs: dict
    n_frames: int
    r_max_A: float
    bin_width_A: float
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _frame_histograms(frame: Atoms, a: _Group, b: _Group, masses: np.ndarray,
                      edges: np.ndarray) -> np.ndarray:
    """Per-frame step: histogram of intermolecular minimum-image distances from every
    particle of `a` to those of `b`, shape (n_a, n_bins)."""
    from ase.geometry import get_distances

    pa, pb = a.positions(frame, masses), b.positions(frame, masses)
    _, dist = get_distances(pa, pb, cell=frame.cell, pbc=frame.pbc)
    dist = np.where(a.mol[:, None] == b.mol[None, :], np.inf, dist)
    return np.array([np.histogram(row, bins=edges)[0] for row in dist])


def _first_shell_A(r: np.ndarray, g: np.ndarray, smooth_A: float = 0.25) -> float | None:
    """The first minimum of g after its first peak above 1.2, or None.

    g is smoothed by a moving average over `smooth_A`; a dip of less than 10 % of the peak
    height is noise on the flank of a peak, not its minimum, so the search goes on past it.
    """
    width = max(3, int(round(smooth_A / (r[1] - r[0]))) | 1)
    smooth = np.convolve(g, np.ones(width) / width, mode="same")
    above = np.flatnonzero(smooth > 1.2)
    if not above.size:
        return None
    i, n = above[0], len(smooth)
    while True:
        while i + 1 < n and smooth[i + 1] >= smooth[i]:
            i += 1  # climb to a peak
        peak = smooth[i]
        while i + 1 < n and smooth[i + 1] < smooth[i]:
            i += 1  # descend to the minimum after it (the start of a flat one)
        if i + 1 >= n:
            return None
        if smooth[i] <= 0.9 * peak:
            return float(r[i])


def conclude_structure(hist: np.ndarray, a: _Group, b: _Group, volume_A3: float,
                       edges: np.ndarray, n_blocks: int = 5) -> dict:
    """g(r), n(r) and first-shell coordination of one pair.

    Args:
        hist: per-frame histograms, shape (n_frames, n_a, n_bins).
        volume_A3: mean cell volume.
    """
    n_frames, n_a, _ = hist.shape
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    mean_counts = hist.sum(axis=(0, 1)) / (n_frames * n_a)  # per central particle
    # density of b particles a central particle can see (its own molecule left out)
    same = np.mean([np.sum(b.mol == m) for m in a.mol])
    rho_b = (len(b.members) - same) / volume_A3
    g = mean_counts / (rho_b * shell)
    running = np.cumsum(mean_counts)
    r_shell = _first_shell_A(r, g)
    entry = {"r_A": r.tolist(), "g": g.tolist(), "coordination": running.tolist(),
             "first_shell_A": r_shell, "n_central": n_a, "n_neighbours": len(b.members)}
    if r_shell is not None:
        per_central = hist[:, :, r <= r_shell].sum(axis=2)  # (n_frames, n_a)
        per_frame = per_central.mean(axis=1)
        value, error = (block_average(per_frame, n_blocks) if n_frames >= n_blocks
                        else (float(per_frame.mean()), float("nan")))
        counts, freq = np.unique(per_central, return_counts=True)
        entry["first_shell_coordination"] = {
            "value": value, "error": error,
            "distribution": {str(int(c)): float(f / per_central.size)
                             for c, f in zip(counts, freq, strict=True)}}
        entry["per_frame_coordination"] = per_frame.tolist()
    else:
        entry["first_shell_coordination"] = None
        entry["per_frame_coordination"] = None
    return entry


def structure_analysis(path: str | os.PathLike, pairs: Sequence[str], *,
                       r_max_A: float | None = None, bin_width_A: float = 0.05,
                       molecules: str | None = None, every: int = 1,
                       out_dir: str | os.PathLike | None = None,
                       topology=None) -> StructureResult:
    """RDFs and coordination numbers of `pairs` over a trajectory (run folder or file).

    Args:
        pairs: e.g. ``["Li-F@PF6", "@EMIM-@PF6"]``.
        r_max_A: largest distance (default and maximum: half the shortest box width, where
            the minimum image stops being unique; at most 12 Å by default).
        bin_width_A: histogram bin, Å.
        molecules: ``"ION:COUNT,..."`` for frames without molecule information.
        every: analyse every `every`-th frame.
        out_dir: with it, writes ``structure.json`` and ``rdf.png``.
        topology: an `ionmix.properties.foreign.Topology` for a LAMMPS/GROMACS trajectory.
    """
    from ionmix.properties.transport import read_trajectory, trajectory_path

    path = trajectory_path(path)
    frames = read_trajectory(path, molecules, topology)[:: max(1, int(every))]
    ref = frames[0]
    if ref.cell.rank != 3:
        raise StructureAnalysisError(f"{path}: the frames have no 3-D cell; an RDF needs one")
    limit = 0.5 * min(1.0 / np.linalg.norm(np.linalg.inv(f.cell.array).T, axis=1).min()
                      for f in frames)
    if r_max_A is None:
        r_max_A = min(12.0, limit)
    elif r_max_A > limit + 1e-9:
        raise StructureAnalysisError(f"--r-max-A {r_max_A:g} Å exceeds half the shortest box width "
                             f"({limit:.3g} Å)")
    edges = np.arange(0.0, r_max_A + 1e-9, bin_width_A)
    from ionmix.properties.transport import _molecule_index
    from ionmix.properties.unwrap import bond_tree, make_whole

    mol, mol_names = _molecule_index(ref)
    names = np.asarray(ref.arrays["ion_name"]).astype(str)
    masses = ref.get_masses()
    parsed = {p: parse_pair(p) for p in pairs}
    if any(sel.element is None for pair in parsed.values() for sel in pair):
        # molecular centres need whole molecules (a LAMMPS dump wraps atom by atom)
        tree = bond_tree(ref, mol, mol_names)
        for frame in frames:
            frame.positions = make_whole(frame.positions, frame.cell.array, tree)
    groups = {p: (_group(ref, sa, mol, names), _group(ref, sb, mol, names))
              for p, (sa, sb) in parsed.items()}
    volume = float(np.mean([f.get_volume() for f in frames]))
    results = {}
    for p, (a, b) in groups.items():
        hist = np.array([_frame_histograms(f, a, b, masses, edges) for f in frames])
        results[p] = conclude_structure(hist, a, b, volume, edges)
    warnings = [f"{p}: no first shell (a peak of g above 1.2 and the minimum after it) "
                f"within {r_max_A:.3g} Å; no first-shell coordination (a larger box reaches "
                "further)" for p, e in results.items() if e["first_shell_A"] is None]
    result = StructureResult(results, len(frames), float(r_max_A), float(bin_width_A),
                             str(path), warnings)
    if out_dir is not None:
        from ionmix.files import atomic_write_json
        from ionmix.report.figure import save_figure
        from ionmix.report.transport import plot_rdf

        out = Path(out_dir)
        atomic_write_json(out / "structure.json", result.to_json())
        save_figure(plot_rdf(result), out / "rdf.png")
    return result
