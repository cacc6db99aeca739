"""`ionmix pseudo`: make a fallback pslibrary pseudopotential set with ld1.x, and compare two
sets on your frames."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ionmix.cli._common import app, console, progress_bar

SETS_NOTE = (
    "GBRV ultrasoft files (the paper's) or SSSP files are what most users use; the "
    "pslibrary set made here is a fallback for machines without one. Labels depend on "
    "the set: compare sets on your frames with 'ionmix pseudo compare'.")

pseudo_app = typer.Typer(
    help="Pseudopotentials for the espresso teacher. " + SETS_NOTE, no_args_is_help=True)
app.add_typer(pseudo_app, name="pseudo")


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """ELEMENT=FILE options as a dict; ConfigError naming the option otherwise."""
    from ionmix.config import ConfigError

    pairs = {}
    for value in values or []:
        element, sep, name = value.partition("=")
        if not sep or not element or not name:
            raise ConfigError(f"{what}: expected ELEMENT=FILE, got {value!r}")
        pairs[element.strip()] = name.strip()
    return pairs


@pseudo_app.command("generate")
def pseudo_generate(
    out_dir: Annotated[Path, typer.Argument(help="Folder receiving the UPF files.")],
    pslibrary: Annotated[Path | None, typer.Option(
        help="A pslibrary checkout (github.com/dalcorso/pslibrary): cards from its job "
        "scripts.")] = None,
    from_upf: Annotated[list[Path] | None, typer.Option(
        exists=True, dir_okay=False,
        help="pslibrary UPF file(s) to regenerate from their own embedded input card "
        "(repeatable).")] = None,
    elements: Annotated[str, typer.Option(
        help="With --pslibrary: comma-separated elements.")] = "H,Li,B,C,N,O,F,P,S",
    functional: Annotated[str, typer.Option(help="With --pslibrary: its functional "
                                            "folder.")] = "pbe",
    ld1: Annotated[str, typer.Option(help="The ld1.x executable.")] = "ld1.x",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Generate pslibrary 1.0.0 ultrasoft (rrkjus) files with the installed ld1.x, from a
    pslibrary checkout or from existing pslibrary UPF files' embedded cards.

    GBRV ultrasoft files (the paper's) or SSSP files are what most users use; this set is a
    fallback for machines without one. Prints the [teacher] lines that use the set.
    """
    from ionmix.teachers.espresso import sha256_of
    from ionmix.teachers.pseudo import (
        PseudoError,
        element_of_upf,
        generate_pslibrary,
        regenerate_from_upf,
    )

    if (pslibrary is None) == (not from_upf):
        raise PseudoError("give either --pslibrary DIR or --from-upf FILE (not both)")
    if pslibrary is not None:
        wanted = [e.strip() for e in elements.split(",") if e.strip()]
        made = generate_pslibrary(pslibrary, wanted, out_dir, functional, ld1)
    else:
        made = {}
        for path in from_upf:
            made[element_of_upf(path)] = regenerate_from_upf(path, out_dir, ld1)
    files = {el: path.name for el, path in sorted(made.items())}
    if as_json:
        print(json.dumps({"pseudo_dir": str(out_dir.absolute()), "pseudopotentials": files,
                          "sha256": {p.name: sha256_of(p) for p in made.values()}}, indent=2))
        return
    table = Table("element", "file", "sha256")
    for el, path in sorted(made.items()):
        table.add_row(el, path.name, sha256_of(path)[:16] + "…")
    console.print(table)
    console.print("[teacher] lines for these files:", markup=False)
    pseudos = ", ".join(f'{el} = "{name}"' for el, name in files.items())
    console.print(f'pseudo_dir = "{out_dir.absolute()}"\npseudopotentials = {{{pseudos}}}',
                  markup=False, highlight=False)
    console.print(SETS_NOTE, markup=False, highlight=False)


@pseudo_app.command("compare")
def pseudo_compare(
    frames_path: Annotated[Path, typer.Argument(
        metavar="FRAMES", help="A dataset store (.db) or any ASE-readable file of frames.")],
    set_a: Annotated[Path, typer.Option(help="Folder of the first pseudopotential set.")],
    set_b: Annotated[Path, typer.Option(help="Folder of the second set.")],
    pseudo: Annotated[list[str] | None, typer.Option(
        help="ELEMENT=FILE naming an element's file in both folders (repeatable; default: "
        "each folder's one UPF file of that element).")] = None,
    teacher_config: Annotated[Path | None, typer.Option(
        help="TOML with an [teacher] table (kind espresso): cutoffs, command, MPI ranks... "
        "shared by both sets.")] = None,
    composition: Annotated[str | None, typer.Option(
        help="With a store: only this composition key.")] = None,
    frames: Annotated[int | None, typer.Option(
        min=1, help="Equally spaced frames per composition (default: all).")] = None,
    workdir: Annotated[Path | None, typer.Option(
        help="Keep pw.x runs here (default: a temporary folder, removed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Label the same frames with two espresso teachers that differ only in their
    pseudopotentials, and report energy (meV/atom) and force (meV/Å) differences per
    element. Total energies differ by a constant per atom of each element (fitted and
    shown); the residual and the forces are what change training targets.
    """
    from ionmix.cli.label import _teacher_and_cluster
    from ionmix.labelling import select_frames
    from ionmix.teachers import teacher_spec
    from ionmix.teachers.pseudo import compare_pseudopotentials, find_pseudopotentials

    base, _ = _teacher_and_cluster("espresso", teacher_config)
    picked, provenance = select_frames(frames_path, composition, frames)
    elements = {s for atoms in picked for s in atoms.get_chemical_symbols()}
    named = _pairs(pseudo, "--pseudo")
    params = {k: v for k, v in base.params.items() if k != "pseudo_sha256"}
    specs = [teacher_spec({"kind": "espresso", **params, "pseudo_dir": str(folder.absolute()),
                           "pseudopotentials": find_pseudopotentials(folder, elements, named)},
                          f"--set-{ab}") for ab, folder in (("a", set_a), ("b", set_b))]

    def run(folder: Path) -> dict:
        with progress_bar("pw.x runs", stderr=True) as update:
            return compare_pseudopotentials(
                picked, *specs, folder, ions_of=provenance.ion_set,
                progress=lambda k, n, _: update(completed=k, total=n))

    if workdir is not None:
        result = run(workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="ionmix-pseudo-") as scratch:
            result = run(Path(scratch))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_comparison(result)


def _print_comparison(result: dict) -> None:
    table = Table("element", "atoms", "E offset (eV/atom)", "F MAE (meV/Å)",
                  "F RMS (meV/Å)", "F max (meV/Å)", "file a", "file b")
    for el, row in result["per_element"].items():
        f, offset = row["force_meV_per_A"], row["energy_offset_eV_per_atom"]
        table.add_row(el, str(row["n_atoms"]), "—" if offset is None else f"{offset:+.4f}",
                      f"{f['mae']:.1f}", f"{f['rms']:.1f}", f"{f['max']:.1f}",
                      result["pseudopotentials_a"][el], result["pseudopotentials_b"][el])
    console.print(table)
    e, f = result["energy_residual_meV_per_atom"], result["force_meV_per_A"]
    console.print(f"{result['n_frames']} frames: energy offset (b − a) "
                  f"{result['energy_offset_eV_per_atom']:+.4f} eV/atom on average; residual "
                  f"after per-element offsets MAE {e['mae']:.2f}, RMS {e['rms']:.2f} meV/atom; "
                  f"forces MAE {f['mae']:.1f}, RMS {f['rms']:.1f} meV/Å "
                  f"({result['teacher_a']} vs {result['teacher_b']})", highlight=False)
