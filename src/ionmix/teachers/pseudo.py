"""Pseudopotentials for the espresso teacher: a fallback set made with ld1.x, and a
comparison of two sets on a user's frames.

**What most users use:** the paper used GBRV ultrasoft pseudopotentials; SSSP (the
Materials Cloud's verified efficiency/precision sets) is the other common choice. Use those
where you have them. The pslibrary 1.0.0 PBE ultrasoft files made here are a *fallback*
for machines without a set (tests, a laptop): they are not the paper's files, and labels
depend measurably on the choice (on [PF6]⁻ the force on F differs by ~0.3 eV/Å between
pslibrary and norm-conserving files), so compare sets on your frames
(`compare_pseudopotentials`, ``ionmix pseudo compare``) before mixing labels.

Generation runs the installed ``ld1.x`` (Quantum ESPRESSO's atomic code) on pslibrary's
published input cards, taken from either

* a pslibrary checkout (`pslibrary_cards`): the ``cat > NAME.in << EOF ... EOF`` blocks of
  its ``*.job`` scripts, with ``$fct``/``$gfun``/``$nrel`` from ``<functional>/
  environment.job``; or
* a pslibrary UPF file's own ``<PP_INPUTFILE>`` (`embedded_input`): every pslibrary file
  carries the card that made it, so a file regenerates itself (the N file Debian ships is
  reproduced to ~1e-8).

Only ultrasoft (``rrkjus``) cards are generated: PAW files written by ld1.x 6.7 need
reformatting before pw.x 6.7 reads them.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ionmix.errors import InputError, RunError
from ionmix.progress import Progress

#: pslibrary's job scripts holding ultrasoft cards, best first (1.0.0's high-accuracy set).
US_JOB_FILES = ("us_ps_high.job", "us_ps_low.job", "us_ps_collection.job",
                "us_ps_collection_tot.job", "us_ps_collection_alt.job")
_CARD = re.compile(r"^cat\s*>\s*(\S+)\.in\s*<<\s*'?EOF'?\s*\n(.*?)^EOF\s*$", re.M | re.S)
_FILE_PSEUDOPW = re.compile(r"file_pseudopw\s*=\s*'([^']+)'", re.I)


class PseudoError(InputError):
    """A pseudopotential input that cannot be used (no card, PAW card, missing ld1.x)."""


class Ld1Error(RunError):
    """ld1.x failed on a card; carries its output's tail."""


def embedded_input(upf_path: str | Path) -> str:
    """The ld1.x input card a pslibrary UPF file embeds (its ``<PP_INPUTFILE>``), unescaped.

    Raises:
        PseudoError: the file embeds none (not made by ld1.x, or made without it).
    """
    text = Path(upf_path).read_text(errors="replace")
    match = re.search(r"<PP_INPUTFILE>(.*?)</PP_INPUTFILE>", text, re.S)
    if match is None:
        raise PseudoError(f"{upf_path}: no <PP_INPUTFILE> section (only pslibrary/ld1.x "
                          "files carry their input card)")
    return html.unescape(match.group(1)).strip("\n") + "\n"


def _environment(pslibrary: Path, functional: str) -> dict[str, str]:
    """``$fct``, ``$gfun``, ``$nrel`` of pslibrary's ``<functional>/environment.job``."""
    path = pslibrary / functional / "environment.job"
    if not path.is_file():
        raise PseudoError(f"{path} not found: is {pslibrary} a pslibrary checkout, and "
                          f"{functional!r} one of its functionals (pbe, pbesol, ...)?")
    return dict(re.findall(r"^\s*(\w+)\s*=\s*'?([^'\s]*)'?\s*$", path.read_text(), re.M))


def _substitute(card: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), card)


def pslibrary_cards(pslibrary: str | Path, functional: str = "pbe",
                    job_files: tuple[str, ...] = US_JOB_FILES) -> dict[str, str]:
    """Ultrasoft ld1.x cards of a pslibrary checkout: output file name → card.

    The first job file naming a file wins (the order of `job_files`). Cards inside
    ``if [ $nrel = 2 ]`` blocks (fully relativistic ones) keep their names' ``rel-`` prefix,
    so they never shadow scalar-relativistic ones.
    """
    root = Path(pslibrary)
    env = _environment(root, functional)
    cards: dict[str, str] = {}
    for name in job_files:
        path = root / name
        if not path.is_file():
            continue
        for match in _CARD.finditer(path.read_text(errors="replace")):
            card = _substitute(match.group(2), env)
            upf = _FILE_PSEUDOPW.search(card)
            if upf is not None:
                cards.setdefault(upf.group(1), card)
    if not cards:
        raise PseudoError(f"{root}: no ld1.x cards in {', '.join(job_files)}")
    return cards


def card_for(cards: dict[str, str], element: str, functional: str = "pbe",
             version: str = "1.0.0") -> tuple[str, str]:
    """(file name, card) of `element`'s ultrasoft pslibrary file, e.g.
    ``N.pbe-n-rrkjus_psl.1.0.0.UPF``; the first in `cards` order.

    Raises:
        PseudoError: no such card, naming the element and the files there are.
    """
    pattern = re.compile(rf"^{re.escape(element)}\.{re.escape(functional)}-(\w+-)?"
                         rf"rrkjus_psl\.{re.escape(version)}\.UPF$")
    for name, card in cards.items():
        if pattern.match(name):
            return name, card
    near = sorted(n for n in cards if n.startswith(f"{element}."))
    raise PseudoError(f"no pslibrary {version} {functional} ultrasoft card for {element}"
                      + (f" (there are: {', '.join(near)})" if near else ""))


def _refuse_paw(card: str, what: str) -> None:
    if re.search(r"lpaw\s*=\s*\.t", card, re.I):
        raise PseudoError(f"{what}: a PAW card; PAW files written by ld1.x 6.7 need "
                          "reformatting before pw.x 6.7 reads them: use an ultrasoft "
                          "(rrkjus) card")


def run_ld1(card: str, out_dir: str | Path, ld1: str = "ld1.x",
            timeout_s: float = 300.0) -> Path:
    """Run ld1.x on `card` in a scratch folder and move the UPF file it writes to
    `out_dir`; returns its path.

    Raises:
        PseudoError: ld1.x not found, or a PAW card. Ld1Error: ld1.x failed or wrote no
            file (with its output's tail).
    """
    name_match = _FILE_PSEUDOPW.search(card)
    if name_match is None:
        raise PseudoError("the ld1.x card names no file_pseudopw")
    name = name_match.group(1)
    _refuse_paw(card, name)
    if shutil.which(ld1) is None:
        raise PseudoError(f"{ld1!r} not found on PATH (apt-get install quantum-espresso)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ld1-") as scratch:
        proc = subprocess.run([ld1], input=card, text=True, capture_output=True,
                              cwd=scratch, timeout=timeout_s, check=False)
        made = Path(scratch) / name
        if proc.returncode != 0 or not made.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise Ld1Error(f"ld1.x failed on {name} (exit status {proc.returncode}):\n{tail}")
        return Path(shutil.move(str(made), out_dir / name))


def regenerate_from_upf(upf_path: str | Path, out_dir: str | Path,
                        ld1: str = "ld1.x") -> Path:
    """Regenerate a pslibrary UPF file from its own embedded card into `out_dir`."""
    return run_ld1(embedded_input(upf_path), out_dir, ld1)


def generate_pslibrary(pslibrary: str | Path, elements, out_dir: str | Path,
                       functional: str = "pbe", ld1: str = "ld1.x") -> dict[str, Path]:
    """pslibrary 1.0.0 ultrasoft files of `elements` from a checkout: element → path."""
    cards = pslibrary_cards(pslibrary, functional)
    picked = {el: card_for(cards, el, functional) for el in elements}  # all found, then run
    return {el: run_ld1(card, out_dir, ld1) for el, (_, card) in picked.items()}


def upf_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every numeric array of a UPF v2 file by tag (``PP_LOCAL``, ``PP_BETA.1``, ...)."""
    text = Path(path).read_text(errors="replace")
    arrays = {}
    for tag, body in re.findall(r"<(PP_[A-Z0-9_.]+)\b[^>]*>([^<]+)</\1>", text):
        try:
            values = np.array(body.split(), dtype=float)
        except ValueError:  # text sections (PP_INFO lines)
            continue
        if values.size:
            arrays[tag] = values
    return arrays


def compare_upf(path_a: str | Path, path_b: str | Path) -> dict[str, float]:
    """Largest absolute difference per numeric array of two UPF files (arrays of one file
    only, or of different lengths, give inf)."""
    a, b = upf_arrays(path_a), upf_arrays(path_b)
    return {tag: float(np.max(np.abs(a[tag] - b[tag])))
            if tag in a and tag in b and a[tag].shape == b[tag].shape else float("inf")
            for tag in sorted(set(a) | set(b))}


def element_of_upf(path: str | Path) -> str:
    """The element a UPF file is for: its header's (UPF v2 ``element="N"``, v1 ``N  Element``
    line), else its name's prefix (``N.pbe-...``, GBRV's ``n_pbe_v1.2...``)."""
    text = Path(path).read_text(errors="replace")[:20000]
    match = re.search(r'element\s*=\s*"\s*([A-Za-z]{1,2})\s*"', text) \
        or re.search(r"^\s*([A-Za-z]{1,2})\s+Element\b", text, re.M)
    symbol = match.group(1) if match else re.split(r"[._-]", Path(path).name)[0]
    return symbol.capitalize()


# -- comparing two sets on frames -----------------------------------------------------------

def find_pseudopotentials(pseudo_dir: str | Path, elements,
                          named: dict[str, str] | None = None) -> dict[str, str]:
    """Element → file name in `pseudo_dir`: `named` where given, else the one UPF file of
    that element there (by its header, else its name's prefix).

    Raises:
        PseudoError: the folder is missing, or an element has no file or several (naming
            them: pass ``--pseudo EL=FILE``).
    """
    folder = Path(pseudo_dir)
    if not folder.is_dir():
        raise PseudoError(f"pseudopotential folder {folder} does not exist")
    named = dict(named or {})
    by_element: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() == ".upf":
            by_element.setdefault(element_of_upf(path), []).append(path.name)
    picked = {}
    for element in sorted(set(elements)):
        if element in named:
            if not (folder / named[element]).is_file():
                raise PseudoError(f"{named[element]} (for {element}) is not in {folder}")
            picked[element] = named[element]
            continue
        found = by_element.get(element, [])
        if len(found) != 1:
            what = f"several ({', '.join(found)})" if found else "none"
            raise PseudoError(f"{folder}: {what} UPF files for {element}; name one with "
                              f"--pseudo {element}=FILE")
        picked[element] = found[0]
    return picked


def _per_element_offsets(delta_eV: np.ndarray, counts: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares per-element energy offsets (eV/atom) explaining the frames' energy
    differences, and what is left (eV per frame). Two sets' total energies differ by a
    constant per atom of each element (their pseudo-atoms' energies), which isolated-atom
    references remove in training; only the residual changes what a model learns."""
    offsets, *_ = np.linalg.lstsq(counts, delta_eV, rcond=None)
    return offsets, delta_eV - counts @ offsets


def compare_pseudopotentials(frames, spec_a, spec_b, workdir: str | Path, ions_of=None,
                             progress: Progress | None = None) -> dict:
    """Label `frames` with two espresso teacher specs (differing in pseudopotentials) and
    compare.

    Args:
        frames: ASE Atoms. spec_a, spec_b: espresso teacher specs.
        workdir: pw.x runs go to ``workdir/a/<i>`` and ``workdir/b/<i>``.
        ions_of: ``ions_of(atoms)`` → the frame's ion set (for the charge check) or None.
        progress: ``progress(done, total, "pw.x runs")`` after each pw.x run.

    Returns:
        JSON-able dict: per element the fitted energy offset (eV/atom; None unless the
        frames' element ratios differ enough to separate the elements) and force
        differences (MAE, RMS, max of |F_b − F_a| components, meV/Å); overall energy
        residual after the offsets (MAE, RMS, meV/atom) and force MAE/RMS; both teacher
        keys and the files used.
    """
    from ionmix.teachers import make_teacher

    teachers = [make_teacher(spec_a), make_teacher(spec_b)]
    for atoms in frames:
        for teacher in teachers:
            teacher.ions = ions_of(atoms) if ions_of else None
            teacher.check_frame(atoms)  # all problems before the first pw.x run
    energies = np.zeros((len(frames), 2))
    dforces, symbols = [], []
    for i, atoms in enumerate(frames):
        forces = []
        for j, teacher in enumerate(teachers):
            work = atoms.copy()
            work.calc = teacher.calculator(atoms, Path(workdir) / "ab"[j] / str(i))
            energies[i, j] = work.get_potential_energy()
            forces.append(work.get_forces())
            if progress is not None:
                progress(2 * i + j + 1, 2 * len(frames), "pw.x runs")
        dforces.append(forces[1] - forces[0])
        symbols += atoms.get_chemical_symbols()
    return _comparison(frames, energies, np.concatenate(dforces), np.array(symbols),
                       teachers)


def _stats_meV(values: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.mean(np.abs(values)) * 1e3),
            "rms": float(np.sqrt(np.mean(values**2)) * 1e3),
            "max": float(np.max(np.abs(values)) * 1e3)}


def _comparison(frames, energies, dforces, symbols, teachers) -> dict:
    elements = sorted(set(symbols))
    counts = np.array([[a.get_chemical_symbols().count(el) for el in elements]
                       for a in frames], dtype=float)
    n_atoms = counts.sum(axis=1)
    delta_eV = energies[:, 1] - energies[:, 0]
    offsets, residual = _per_element_offsets(delta_eV, counts)
    # one offset per element needs frames of different element ratios (compositions)
    identifiable = np.linalg.matrix_rank(counts) == len(elements)
    per_element = {el: {"energy_offset_eV_per_atom": float(offsets[k]) if identifiable
                        else None,
                        "n_atoms": int(np.sum(symbols == el)),
                        "force_meV_per_A": _stats_meV(dforces[symbols == el])}
                   for k, el in enumerate(elements)}
    return {
        "n_frames": len(frames),
        "teacher_a": teachers[0].key, "teacher_b": teachers[1].key,
        "pseudopotentials_a": teachers[0].params.pseudopotentials,
        "pseudopotentials_b": teachers[1].params.pseudopotentials,
        "energy_offset_eV_per_atom": float(np.mean(delta_eV / n_atoms)),
        "energy_residual_meV_per_atom": _stats_meV(residual / n_atoms),
        "force_meV_per_A": _stats_meV(dforces),
        "per_element": per_element,
        "note": "energies differ by a constant per atom of each element (fitted offsets, "
                "removed by isolated-atom references; per element only where the frames' "
                "element ratios differ); the residual is what changes training targets",
    }
