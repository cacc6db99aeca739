"""`ionmix build` and `ionmix sample`: Packmol boxes and classical sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ionmix.cli._common import (
    app,
    console,
    out_folder,
    progress_bar,
)


@app.command()
def build(
    config: Annotated[Path, typer.Argument(
        help="Sampling config (TOML) with mixture and sampling tables.")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Output folder for the boxes.")] = Path("boxes"),
) -> None:
    """Pack one box per composition and replica with Packmol (extxyz + PDB), no MD."""
    import ase.io

    from ionmix.build import build_box
    from ionmix.config import load_sample_config
    from ionmix.dataset.provenance import Provenance
    from ionmix.sampling import plan_sampling

    cfg = load_sample_config(config, "ionmix build")
    plan = plan_sampling(cfg)
    out.mkdir(parents=True, exist_ok=True)
    # the boxes' ion set (and teacher) travel with them, for md/props on a built box
    Provenance().add(teacher=plan.teacher, ion_set=plan.ions).write(out)
    for run in plan.runs:
        atoms = build_box(run.counts, density_g_cm3=cfg.sampling.initial_density_g_cm3,
                          seed=run.seed, ions=plan.ions)
        atoms.info.update(teacher=plan.teacher.key, ion_set=plan.ions.key,
                          charge_scale=cfg.mixture.charge_scale, cutoff_A=plan.cutoff_A)
        ase.io.write(out / f"{run.run_id}.extxyz", atoms, format="extxyz")
        ase.io.write(out / f"{run.run_id}.pdb", atoms, format="proteindatabank")
        counts = ", ".join(f"{n} {k}" for k, n in run.counts.items())
        console.print(f"{run.run_id}: {len(atoms)} atoms ({counts}), "
                      f"edge {atoms.cell.lengths()[0]:.2f} Å")
    console.print(f"[green]wrote {2 * len(plan.runs)} files to {out}[/]")


@app.command()
def sample(
    config: Annotated[Path, typer.Argument(
        help="Sampling config (TOML) with mixture and sampling tables.")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Study folder (runs, logs, checkpoints).")] = Path(
        "runs/sample"),
    dataset: Annotated[str | None, typer.Option(
        help="ASE database URL or path for the frames (default OUT/frames.db).")] = None,
) -> None:
    """Build, equilibrate and sample every composition × replica; store labelled frames.

    Resumable: run the same command again after an interruption and it continues from the
    last stored snapshot of each run.
    """
    from ionmix.config import load_sample_config
    from ionmix.dataset import DatasetStore
    from ionmix.sampling import plan_sampling
    from ionmix.sampling import sample as run_sampling

    cfg = load_sample_config(config)
    plan = plan_sampling(cfg)
    console.print(f"{len(plan.runs)} runs × {cfg.sampling.n_snapshots} snapshots, "
                  f"cutoff {plan.cutoff_A:.2f} Å, charges × {cfg.mixture.charge_scale}, "
                  f"teacher {plan.teacher.key}")
    store = DatasetStore(dataset or out / "frames.db")
    done = sum(store.count(run_id=r.run_id) for r in plan.runs)
    with progress_bar("sampling", total=len(plan.runs) * cfg.sampling.n_snapshots,
                      completed=done) as update:
        # the runs go side by side: one count for all of them, not the run of the moment
        results = run_sampling(cfg, out, dataset, on_snapshot=lambda run, k: update(advance=1))
    t = Table(title=f"Sampled into {dataset or out / 'frames.db'}")
    for col in ("run", "frames", "resumed at", "mean density g/cm³"):
        t.add_column(col)
    for r in results:
        rho = f"{r.mean_density_g_cm3:.4f}" if r.mean_density_g_cm3 else "-"
        t.add_row(r.run_id, str(r.n_frames), str(r.resumed_from), rho)
    console.print(t)
    for r in results:
        if r.equilibration_warning:
            console.print(f"[yellow]warning:[/] {r.equilibration_warning}", highlight=False,
                          markup=False)
