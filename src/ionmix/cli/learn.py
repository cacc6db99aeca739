"""`ionmix learn`: the active-learning loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ionmix.cli._common import (
    app,
    console,
    out_folder,
    say_to,
)


@app.command()
def learn(
    config: Annotated[Path, typer.Argument(
        help="Learn config (TOML): mixture, sampling, teacher, cluster and learn tables.")],
    out: Annotated[Path, typer.Option(
        callback=out_folder, help="Loop folder; rerun to resume.")] = Path(
        "runs/learn"),
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler (overrides [cluster]).")] = None,
) -> None:
    """Active learning: train a committee, explore with it (NPT walkers, volume scans),
    label what it disagrees on with the teacher, retrain — until the accurate share and
    the committee's NPT density settle, or the generation budget is spent. Resumable."""
    from ionmix.active import load_learn_config, run_learning

    cfg = load_learn_config(config)
    result = run_learning(cfg, out, scheduler=scheduler,
                          say=say_to(console))
    console.print(f"[bold]{result.stopped_because}[/]", highlight=False)
    console.print(f"[bold green]report:[/] {result.report_path}")
