"""Box packing with Packmol: a periodic cubic box of whole ions at a chosen density.

:func:`build_box` sizes a cube from the total mass and ``density_g_cm3``, asks Packmol (the
``packmol`` executable of the PyPI package, next to the Python interpreter) to place the
ions with periodic boundary conditions (Packmol's ``pbc`` keyword: the ``tolerance_A``
separation holds between periodic images too, so no margin at the box faces is needed),
and returns an ``ase.Atoms``:

- atoms ordered molecule by molecule: all molecules of the first ion in ``counts``, then
  the second, ...; each molecule's atoms contiguous and in its template (.itp) order;
- molecules whole (unwrapped): a molecule near a face sticks out of the box rather than
  being split;
- per-atom arrays ``mol_id`` (int, 0-based molecule index) and ``ion_name`` (str), from
  and the info ``molecules`` (``"Li:2,PF6:4"``), the one convention of
  :mod:`ionmix.chemistry.topology` from which every stage rebuilds the classical topology;
- masses from the force field (so densities match the classical system).

The initial density should be a bit below the liquid's (Packmol packs more easily, the
liquid relaxes under NPT): the default 1.2 g/cm³ is ~0.85-0.9 x that of [EMIM][PF6]-based
liquids (about 1.37-1.5 g/cm³); pass about 0.9 x the expected density for other liquids.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.chemistry.ions import Ion, load_ion
from ionmix.chemistry.topology import ION_NAME_ARRAY, MOL_ID_ARRAY, encode_runs
from ionmix.errors import InputError
from ionmix.units import volume_A3_for_density

__all__ = [
    "BuildError",
    "DEFAULT_DENSITY_G_CM3",
    "ION_NAME_ARRAY",
    "MOL_ID_ARRAY",
    "box_length_A",
    "build_box",
    "packmol_executable",
]

#: Default packing density, g/cm³ (below the liquid's; see the module docstring).
DEFAULT_DENSITY_G_CM3: float = 1.2


class BuildError(InputError):
    """A box cannot be built: bad composition, or Packmol failed."""


def packmol_executable() -> Path:
    """Path of the ``packmol`` binary installed with the PyPI package (next to Python)."""
    path = Path(sys.executable).parent / "packmol"
    if not path.is_file():
        raise BuildError(
            f"packmol not found at {path}; install it in this environment (pip install packmol)"
        )
    return path


def _resolve(counts: Mapping[str, int], ions: Mapping[str, Ion] | None) -> list[tuple[Ion, int]]:
    """Ions and counts in the given order; checks counts and net charge."""
    if not counts:
        raise BuildError("empty composition: give at least one ion count")
    resolved: list[tuple[Ion, int]] = []
    seen: dict[str, str] = {}
    for key, count in counts.items():
        if isinstance(count, bool) or int(count) != count or count < 0:
            raise BuildError(f"count of {key!r} must be a non-negative integer, got {count!r}")
        ion = load_ion(key, ions)
        if ion.name in seen:
            raise BuildError(f"ion {ion.name} given twice (as {seen[ion.name]!r} and {key!r})")
        seen[ion.name] = key
        if count > 0:
            resolved.append((ion, int(count)))
    if not resolved:
        raise BuildError(f"all counts are zero in {dict(counts)!r}")
    net = sum(ion.charge * n for ion, n in resolved)
    if net != 0:
        detail = ", ".join(f"{n} x {ion.name} ({ion.charge:+d})" for ion, n in resolved)
        raise BuildError(f"composition is not neutral: net charge {net:+d} e from {detail}")
    return resolved


def box_length_A(
    counts: Mapping[str, int],
    density_g_cm3: float = DEFAULT_DENSITY_G_CM3,
    ions: Mapping[str, Ion] | None = None,
) -> float:
    """Edge of the cube (Å) that holds ``counts`` at ``density_g_cm3``."""
    mass = sum(ion.mass_amu * n for ion, n in _resolve(counts, ions))
    return float(volume_A3_for_density(mass, density_g_cm3) ** (1.0 / 3.0))


def _write_xyz(path: Path, symbols: tuple[str, ...], positions: np.ndarray, comment: str) -> None:
    lines = [str(len(symbols)), comment]
    lines += [
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, positions, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def _read_packmol_xyz(path: Path, n_atoms: int) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    if len(lines) < n_atoms + 2 or int(lines[0].split()[0]) != n_atoms:
        raise BuildError(f"Packmol output {path.name} does not hold {n_atoms} atoms")
    symbols, xyz = [], []
    for line in lines[2 : 2 + n_atoms]:
        fields = line.split()
        symbols.append(fields[0])
        xyz.append([float(v) for v in fields[1:4]])
    return symbols, np.array(xyz)


def build_box(
    counts: Mapping[str, int],
    density_g_cm3: float = DEFAULT_DENSITY_G_CM3,
    seed: int = 0,
    tolerance_A: float = 2.0,
    ions: Mapping[str, Ion] | None = None,
    *,
    timeout_s: float = 300.0,
) -> Atoms:
    """Pack a periodic cubic box of whole ions with Packmol.

    Args:
        counts: ``{ion name or alias: number of molecules}``; the order is the atom order.
        density_g_cm3: density of the packed box (g/cm³), which fixes the cube edge.
        seed: Packmol's random seed (>= 0); the same seed gives the same box.
        tolerance_A: minimum distance between atoms of different molecules, periodic images
            included (Å).
        ions: extra ions by name (e.g. from ``load_user_ion``), looked up before the library.
        timeout_s: give up on Packmol after this many seconds.

    Returns:
        ``ase.Atoms`` with a cubic cell (Å), ``pbc=True``, force-field masses, and per-atom
        arrays ``mol_id`` (shape (n_atoms,), int) and ``ion_name`` (shape (n_atoms,), str);
        ``info`` records the seed, density and tolerance.

    Raises:
        BuildError: empty, negative or non-neutral counts, or Packmol failing (the message
            holds the tail of Packmol's output).
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise BuildError(f"seed must be a non-negative integer, got {seed!r}")
    if not tolerance_A > 0:
        raise BuildError(f"tolerance_A must be positive, got {tolerance_A}")
    resolved = _resolve(counts, ions)
    length = box_length_A(counts, density_g_cm3, ions)
    if length < 2 * tolerance_A:
        raise BuildError(f"box edge {length:.3f} Å is shorter than 2 x tolerance_A")
    packmol = packmol_executable()

    symbols: list[str] = []
    masses: list[float] = []
    mol_id: list[int] = []
    ion_name: list[str] = []
    molecule = 0
    with tempfile.TemporaryDirectory(prefix="ionmix-packmol-") as tmp:
        tmpdir = Path(tmp)
        inp = [
            f"tolerance {tolerance_A:.6f}",
            "filetype xyz",
            "output box.xyz",
            f"seed {int(seed)}",
            f"pbc 0. 0. 0. {length:.6f} {length:.6f} {length:.6f}",
        ]
        for k, (ion, n) in enumerate(resolved):
            template = tmpdir / f"ion{k}_{ion.name}.xyz"
            _write_xyz(template, ion.elements, ion.template_positions(), ion.name)
            inp += [f"structure {template.name}", f"  number {n}", "end structure"]
            symbols += list(ion.elements) * n
            masses += list(ion.masses) * n
            ion_name += [ion.name] * (ion.n_atoms * n)
            for _ in range(n):
                mol_id += [molecule] * ion.n_atoms
                molecule += 1
        (tmpdir / "packmol.inp").write_text("\n".join(inp) + "\n")
        out_path = _run_packmol(packmol, tmpdir, timeout_s, counts, length, density_g_cm3,
                                tolerance_A)
        got, positions = _read_packmol_xyz(out_path, len(symbols))
    if got != symbols:
        raise BuildError("Packmol output atom order differs from the templates")  # pragma: no cover

    atoms = Atoms(symbols=symbols, positions=positions, cell=[length] * 3, pbc=True)
    atoms.set_masses(masses)
    atoms.new_array(MOL_ID_ARRAY, np.array(mol_id, dtype=int))
    atoms.new_array(ION_NAME_ARRAY, np.array(ion_name, dtype="U16"))
    atoms.info.update(
        {
            "packmol_seed": int(seed),
            "packing_density_g_cm3": float(density_g_cm3),
            "packing_tolerance_A": float(tolerance_A),
            "molecules": encode_runs([(ion.name, n) for ion, n in resolved]),
        }
    )
    return atoms


def _run_packmol(packmol: Path, tmpdir: Path, timeout_s: float, counts: Mapping[str, int],
                 length: float, density_g_cm3: float, tolerance_A: float) -> Path:
    """Run Packmol on ``tmpdir/packmol.inp``; return the packed ``box.xyz`` (BuildError,
    with the tail of Packmol's output, if it fails or times out)."""
    try:
        with open(tmpdir / "packmol.inp") as stdin:
            proc = subprocess.run(
                [str(packmol)],
                stdin=stdin,
                cwd=tmpdir,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
    except subprocess.TimeoutExpired:
        raise BuildError(
            f"Packmol did not finish within {timeout_s} s for {dict(counts)} at "
            f"{density_g_cm3} g/cm³; try a lower density or a smaller tolerance"
        ) from None
    output = proc.stdout + proc.stderr
    out_path = tmpdir / "box.xyz"
    if proc.returncode != 0 or "Success!" not in output or not out_path.is_file():
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise BuildError(
            f"Packmol failed (exit status {proc.returncode}) packing {dict(counts)} into a "
            f"{length:.3f} Å cube at {density_g_cm3} g/cm³ with tolerance {tolerance_A} Å; "
            f"try a lower density or a smaller tolerance. Packmol's output ends with:\n{tail}"
        )
    return out_path
