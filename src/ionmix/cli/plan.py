"""`ionmix plan` and `ionmix ions`: composition design and the ion library."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ionmix import design
from ionmix.cli._common import (
    app,
    console,
    fmt_comp,
)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="Mixture spec (TOML) with species and units tables, "
                                         "optional training and candidates tables.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    max_condition: Annotated[float, typer.Option(
        min=1.0, help="Largest condition number accepted for the recommended set.")] = (
        design.DEFAULT_MAX_CONDITION),
) -> None:
    """How many compositions (C = N − M), and which, a model must be trained on."""
    result = design.plan(design.load_spec(spec), max_condition=max_condition)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_plan(result, spec)


def _print_plan(result: dict, spec: Path) -> None:
    species = result["species"]
    console.rule(f"[bold]ionmix plan[/] — {spec}")
    t = Table(title="Mixture", show_header=True)
    t.add_column("unit")
    t.add_column("formula")
    for unit, content in result["units"].items():
        t.add_row(unit, " + ".join(f"{n}×{s}" if n != 1 else s for s, n in content.items()))
    console.print(t)
    charged = ", ".join(f"{s}({q:+d})" for s, q in zip(species, result["charges"], strict=True))
    console.print(
        f"species N = {result['n_species']} ({charged}), "
        f"constraints M = {result['n_constraints']}  →  "
        f"[bold green]at least C = {result['min_compositions']} distinct compositions[/]"
    )
    if result["undetermined_directions"]:
        t = Table(title="Per-species energy directions no training set can fix")
        for s in species:
            t.add_column(s, justify="right")
        for row in result["undetermined_directions"]:
            t.add_row(*(f"{v:+.3f}" for v in row))
        console.print(t)
        console.print(
            "Adding c × (a row above) to the per-species energies changes no energy the "
            "mixture can reach: these are fixed only by convention (isolated-atom energies)."
        )
    else:
        console.print("Every per-species energy is identifiable from C compositions.")
    console.print("Determined by ≥ C compositions: " + "; ".join(result["determined_combinations"]))
    tr = result["training"]
    if tr is not None:
        verdict = "[green]sufficient[/]" if tr["sufficient"] else "[red]insufficient[/]"
        cond = tr["condition_number"]
        console.print(
            f"\nProposed training set: {' | '.join(fmt_comp(c) for c in tr['compositions'])}"
            f"\n  rank {tr['rank']} of {result['min_compositions']} → {verdict}"
            + (f", condition number {cond:.1f}" if cond is not None else "")
        )
        t = Table(title="Energy identifiable at each candidate test composition")
        t.add_column("composition")
        t.add_column("identifiable", justify="center")
        for row in tr["identifiable"]:
            t.add_row(fmt_comp(row["composition"]), "yes" if row["identifiable"] else "[red]no[/]")
        console.print(t)
    cond = result["recommended_condition_number"]
    console.print(
        f"\n[bold]Recommended training set[/] (max–min mixing entropy, then best conditioned; "
        f"{result['n_candidates']} candidates): "
        + " | ".join(fmt_comp(c) for c in result["recommended"])
        + (f"  (condition number {cond:.1f})" if math.isfinite(cond) else "")
    )


@app.command()
def ions() -> None:
    """List the ions shipped in the library (name, charge, formula, aliases, source)."""
    from ionmix.chemistry import list_ions, load_ion

    t = Table(title="Ion library (unscaled charges; scaled at system build)")
    for col in ("name", "charge", "formula", "atoms", "aliases", "source"):
        t.add_column(col)
    for name in list_ions():
        ion = load_ion(name)
        t.add_row(ion.name, f"{ion.charge:+d}", ion.formula, str(ion.n_atoms),
                  ", ".join(ion.aliases), ion.source.splitlines()[0] if ion.source else "")
    console.print(t)
