"""The `clipsearch` command: thin typer commands over the library and clipsearch.tune.

Exit codes: 0 success; 1 the run itself failed; 2 bad input (one line on stderr naming the file,
the key and the fix; nothing started, nothing written).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import InputError

# Never wait on a model hub this machine may not reach: clipsearch loads weights from disk only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(
    help="Hyperparameter search for contrastive image-text (CLIP) and image-only (SupCon, SimCLR) "
         "training on Ray Tune. `--quick` runs any command on the embedded digits with tiny models.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Performance benchmarks; results go to results/benchmarks/.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file with sections data, model, loss, "
                                                   "optimizer, scheduler, train, eval (merged over the preset)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override one key, e.g. --set optimizer.lr=3e-4 "
                                                     "--set loss.name=sogclr (repeatable)")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="embedded digits, tiny models: minutes on a 2-core CPU")]


def _err(message: str) -> None:
    typer.echo(f"clipsearch: error: {message}", err=True)


def _print_epoch(metrics: dict, _checkpoint) -> None:
    shown = {k: metrics[k] for k in ("epoch", "train_loss", "tr1", "ir1", "acc1", "objective") if k in metrics}
    typer.echo("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()), err=True)


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quick: QuickOpt = False,
    output: Annotated[Optional[Path], typer.Option(help="run folder for checkpoints (default results/runs/train-TIME)")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this folder from its last checkpoint")] = None,
    progress: Annotated[bool, typer.Option(help="progress bar per epoch on stderr")] = True,
) -> None:
    """One training run. Prints one line per epoch on stderr and the final metrics as one JSON line on stdout.

    Metrics: tr1/ir1 (TR@1, IR@1 in %, text and image retrieval on the validation pairs), acc1/acc5
    (zero-shot accuracy in %), objective = (tr1 + ir1 + acc1) / 3. Chance on the embedded default:
    TR@1 and IR@1 about 0.1 (1,000 validation images), ACC@1 10 (ten digits), objective about 3.4.
    """
    from .config import load_config
    from .train import train as run_training

    resume_from = None
    if resume is not None:
        checkpoint = resume / "checkpoint"
        if not (checkpoint / "state.pt").is_file():
            raise InputError(f"no checkpoint in {resume}", where="--resume", fix="give a run folder written by clipsearch train")
        config = config or resume / "config.yaml"
        output, resume_from = resume, checkpoint
    cfg = load_config(config, set_ or [], quick=quick)
    run_dir = output or Path("results") / "runs" / time.strftime("train-%Y%m%d-%H%M%S")
    result = run_training(cfg, report=_print_epoch, run_dir=run_dir, resume_from=resume_from, progress=progress)
    typer.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


@bench_app.command("train")
def bench_train(
    quick: QuickOpt = True,
    steps: Annotated[int, typer.Option(help="timed steps per variant")] = 20,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """The trainer's steps per second against a naive loop (PIL decode and transform per item,
    fp32, num_workers=0) on the same model and data, measured in the same run."""
    from .bench.train_speed import run_train_benchmark

    run_train_benchmark(steps=steps, out_dir=out)


def main() -> None:
    try:
        app()
    except InputError as exc:
        _err(exc.one_line())
        sys.exit(2)


if __name__ == "__main__":
    main()
