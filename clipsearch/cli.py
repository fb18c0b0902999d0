"""The `clipsearch` command: thin typer commands over the library and clipsearch.tune.

Exit codes: 0 success; 1 the run itself failed; 2 bad input (one line on stderr naming the file,
the key and the fix; nothing started, nothing written).
"""

from __future__ import annotations

import errno
import inspect
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
    no_args_is_help=True, pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Performance benchmarks; results go to results/benchmarks/.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _print_version(asked: bool) -> None:
    """clipsearch's version and torch's and ray's, read from the installed packages' metadata:
    importing torch and ray would take seconds."""
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"clipsearch {of('clipsearch')} (torch {of('torch')}, ray {of('ray')})")
    raise typer.Exit()


@app.callback()
def _top_level(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                     help="print clipsearch's version (and torch's, ray's) and exit")]
               = False) -> None:
    pass  # the top-level options only (--version); the help shown stays Typer(help=...)'s


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML file with sections data, model, loss, "
                                                   "optimizer, scheduler, train, eval (merged over the preset)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override one key, e.g. --set optimizer.lr=3e-4 "
                                                     "--set loss.name=sogclr (repeatable)")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="embedded digits, tiny models: minutes on a 2-core CPU")]


def _err(message: str) -> None:
    typer.echo(f"clipsearch: error: {message}", err=True)


def _check_at_least(*checks: tuple[str, int, int]) -> None:
    """(option, value, least) for each whole-number option; the first below its least is bad input."""
    for option, value, least in checks:
        if value < least:
            raise InputError(f"must be >= {least}, got {value}", where=option, fix=f"give a whole number >= {least}")


def _print_epoch(metrics: dict, _checkpoint) -> None:
    shown = {k: metrics[k] for k in ("epoch", "train_loss", "tr1", "ir1", "acc1", "objective") if k in metrics}
    line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    if "chance_objective" in metrics:  # so that a user's 3.5 on 90 images reads as chance, not progress
        line += f" (chance {metrics['chance_objective']:.3g})"
    typer.echo(line, err=True)


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

    resume_from = None
    if resume is not None:
        checkpoint = resume / "checkpoint"
        if not (checkpoint / "state.pt").is_file():
            raise InputError(f"no checkpoint in {resume}", where="--resume", fix="give a run folder written by clipsearch train")
        config = config or resume / "config.yaml"
        output, resume_from = resume, checkpoint
    cfg = load_config(config, set_ or [], quick=quick)
    # imported once the config is valid: the model libraries take seconds to load, bad input should not wait
    from .train import train as run_training

    run_dir = output or Path("results") / "runs" / time.strftime("train-%Y%m%d-%H%M%S")
    result = run_training(cfg, report=_print_epoch, run_dir=run_dir, resume_from=resume_from, progress=progress)
    typer.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


@app.command()
def report(path: Annotated[Path, typer.Argument(help="results/EXP (an experiment: a section per phase) "
                                                     "or results/EXP/PHASE (one phase)")]) -> None:
    """Write report.html for an experiment or one phase: parallel coordinates, hyperparameter
    importance (fANOVA and PED-ANOVA at a common epoch, optimizer vs loss), objective by optimizer
    and by loss, objective over trials, learning curves, top configurations; importance.json and PNGs
    of the figures (report_png/, needs Chromium). The page opens offline. Prints its path."""
    from .report import report_command

    typer.echo(str(report_command(path)))


@bench_app.command("train")
def bench_train(
    steps: Annotated[int, typer.Option(help="timed steps per variant")] = 20,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """The trainer's steps per second against a naive loop (PIL decode and transform per item,
    fp32, num_workers=0) on the same model and data, measured in the same run."""
    from .bench.train_speed import run_train_benchmark

    run_train_benchmark(steps=steps, out_dir=out)


@bench_app.command("eval")
def bench_eval(
    queries: Annotated[int, typer.Option(help="query embeddings")] = 2000,
    gallery: Annotated[int, typer.Option(help="gallery embeddings")] = 100_000,
    dim: Annotated[int, typer.Option(help="embedding width")] = 512,
    rounds: Annotated[int, typer.Option(help="rounds of all variants (alternating order); medians are reported")] = 3,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """Top-10 retrieval over a large gallery: clipsearch's chunked faiss search against a plain
    torch matmul + topk over the whole score matrix (and the same in chunks): seconds and peak
    memory of each, measured in one run. Writes OUT/eval.json and OUT/eval.md."""
    from .bench.eval_speed import run_eval_benchmark

    _check_at_least(("--queries", queries, 1), ("--gallery", gallery, 1), ("--dim", dim, 1), ("--rounds", rounds, 1))
    run_eval_benchmark(queries=queries, gallery=gallery, dim=dim, rounds=rounds, out_dir=out)


@bench_app.command("data")
def bench_data(
    images: Annotated[int, typer.Option(help="JPEG files (256 x 256, made from the embedded digits)")] = 2000,
    size: Annotated[int, typer.Option(help="image side S the batches are decoded to")] = 224,
    batch: Annotated[int, typer.Option(help="images per batch")] = 128,
    epochs: Annotated[int, typer.Option(help="epochs per variant (the cache's first one builds it)")] = 3,
    threads: Annotated[int, typer.Option(help="torch threads of the main process (DataLoader workers use 1); "
                                         "1 keeps a busy machine's thread contention out of the figures")] = 1,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """The data path: the decoded-image cache (decode once, memory-map every later epoch) against
    decoding every file every epoch in a DataLoader with 0 and 2 workers, on the same JPEG files:
    the wait for each batch, seconds per epoch, images/s, the cache's one-time build and its
    break-even in epochs, measured in one run. Writes OUT/data.json and OUT/data.md."""
    from .bench.data_speed import run_data_benchmark

    _check_at_least(("--images", images, 1), ("--size", size, 1), ("--batch", batch, 1), ("--epochs", epochs, 2),
                    ("--threads", threads, 1))
    run_data_benchmark(images=images, size=size, batch=batch, epochs=epochs, threads=threads, out_dir=out)


# ------------------------------------------------------------------------------ searches (clipsearch.tune)

NameOpt = Annotated[str, typer.Option("--name", help="experiment name: results go to results/NAME/, MLflow experiment NAME")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue an interrupted run of this experiment: no trial "
                                         "lost or repeated (trials go on from their latest checkpoint)")]
SpaceOpt = Annotated[Optional[Path], typer.Option("--space", help="search-space YAML (default: search_spaces/PHASE.yaml, "
                                                  "PHASE_quick.yaml with --quick)")]
SpacesOpt = Annotated[Optional[Path], typer.Option("--spaces", help="folder holding phase1.yaml, phase2.yaml, phase3.yaml "
                                                   "(and their _quick variants; default: search_spaces/)")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="an existing Ray cluster (e.g. ray://head:10001 or "
                                                   "head:6379); default: start a local one on every core")]
TrackingOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: "
                                                    "sqlite:///<absolute path of results>/mlflow.db)")]
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help="where Ray Tune keeps trials and checkpoints: a "
                                                   "shared path or a URI such as s3://bucket/clipsearch; the phase goes "
                                                   "to STORAGE/NAME/PHASE/ray (default: results/NAME/PHASE/ray)")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-trial", help="GPUs per trial; fractions share a GPU (0.5: two trials each)")]
CpusOpt = Annotated[float, typer.Option("--cpus-per-trial", help="CPUs per trial (also the trial's torch threads)")]
SamplesOpt = Annotated[Optional[int], typer.Option("--num-samples", help="trials (phase 2: repeats of the grid); "
                                                   "default: the space file's num_samples")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="seed of every trial's training and of the TPE sampler "
                                                "(default: the base config's seed)")]
FailuresOpt = Annotated[int, typer.Option("--max-failures", help="retries of a failing trial (from its latest "
                                          "checkpoint) before it is marked errored")]
PhaseSetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="a constant over the space's, e.g. --set "
                                                          "data.source=/data/cc3m.csv (repeatable)")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="make every check the command makes, print what it would "
                                         "run (trials, sampler, ASHA, parameters, epochs) and exit: Ray not "
                                         "started, nothing written")]


OptunaStorageOpt = Annotated[Optional[str], typer.Option("--optuna-storage", help="the experiment's Optuna storage, "
                                                         "a study per phase (EXP-PHASE) in it: a database URL "
                                                         "(sqlite:///PATH, postgresql://HOST/DB) or a journal "
                                                         "file's path (for NFS); default: "
                                                         "sqlite:///results/NAME/optuna.db")]
BudgetMinutesOpt = Annotated[Optional[float], typer.Option("--budget-minutes", help="stop the phase's trials after "
                                                           "this much wall time (over the space file's budget)")]
BudgetEpochsOpt = Annotated[Optional[float], typer.Option("--budget-epochs", help="stop the phase's trials once they "
                                                          "have trained this many full-data epochs (epochs x "
                                                          "data.fraction, summed over trials; over the space "
                                                          "file's budget)")]


def _search_options(**given) -> "object":
    from .report import report_after_run
    from .tune.phases import Options

    given["overrides"] = given.pop("set_", None) or []
    # every search command ends each phase with its report; report_after_run turns a failing
    # report into one line on stderr, never a failed phase
    return Options(**{k: v for k, v in given.items() if v is not None}, after_phase=report_after_run)


def _report_outcomes(outcomes) -> None:
    """One JSON line per finished phase on stdout; a failed phase: one line on stderr, exit 1."""
    from .tune.runner import RunFailed

    try:
        for outcome in outcomes:
            best = outcome.best
            typer.echo(json.dumps({"phase": outcome.phase, "results": str(outcome.phase_dir), "trials": outcome.trials,
                                   "errored": outcome.errored, "seconds": round(outcome.seconds, 1),
                                   "best_trial": best["trial_id"], "score": round(best["score"], 4),
                                   "best_epoch": best["best_epoch"], "config": best["decided"]}))
    except RunFailed as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None


def _phase_command(phase: str, dry_run: bool = False, **given) -> None:
    if dry_run:
        from .tune import preview

        typer.echo(preview.phase(phase, _search_options(**given)))
        return

    def outcomes():  # run inside _report_outcomes, which turns a failed run into exit 1
        from .tune.phases import run_phase

        outcome = run_phase(phase, _search_options(**given))
        _register_best_model(outcome)  # a phase run on its own ends its search
        yield outcome

    _report_outcomes(outcomes())


def _register_best_model(outcome) -> None:
    """The model a search ends with, logged and registered in MLflow under the experiment's name
    (clipsearch.tune.model_registry; a store that refuses it is one line, never a failed search).
    Every search command calls it once per search, for the phase that ends it."""
    from .tune.model_registry import register_best_model

    register_best_model(outcome.phase_dir)


def _registering_the_last(outcomes):
    """The protocol's outcomes as they come, phase 3's best model registered as it ends."""
    from .results import PHASES

    for outcome in outcomes:
        if outcome.phase == PHASES[-1]:
            _register_best_model(outcome)
        yield outcome


@app.command()
def phase1(name: NameOpt = "default", quick: QuickOpt = False, resume: ResumeOpt = False, space: SpaceOpt = None,
           set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
           num_samples: SamplesOpt = None, seed: SeedOpt = None, max_failures: FailuresOpt = 2,
           optuna_storage: OptunaStorageOpt = None, budget_minutes: BudgetMinutesOpt = None,
           budget_epochs: BudgetEpochsOpt = None, dry_run: DryRunOpt = False) -> None:
    """Phase 1 of the CLIP protocol: a Bayesian search (Optuna TPE) over losses x optimizers and
    their hyperparameters, with ASHA stopping the weaker trials early.

    Writes results/NAME/phase1/: trials.csv (one row per trial), best.json (the best trial,
    compared with the others at the same epoch), ray/ (Tune's experiment folder); the study
    NAME-phase1 in the experiment's Optuna storage (results/NAME/optuna.db). MLflow: a parent
    run for the phase, a child run per trial. Prints one JSON line with the best trial.
    --resume of a finished phase with a larger --num-samples adds trials to it.
    """
    _phase_command("phase1", **locals())


@app.command()
def phase2(name: NameOpt = "default", quick: QuickOpt = False, resume: ResumeOpt = False, space: SpaceOpt = None,
           set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
           num_samples: SamplesOpt = None, seed: SeedOpt = None, max_failures: FailuresOpt = 2,
           budget_minutes: BudgetMinutesOpt = None, budget_epochs: BudgetEpochsOpt = None,
           dry_run: DryRunOpt = False) -> None:
    """Phase 2: a grid of phase 1's top optimizers (each with its best trial's hyperparameters)
    x the losses (x any grid in the space file), read from results/NAME/phase1.

    Writes results/NAME/phase2/ (trials.csv, best.json, ray/). Needs phase 1's results.
    """
    _phase_command("phase2", **locals())


@app.command()
def phase3(name: NameOpt = "default", quick: QuickOpt = False, resume: ResumeOpt = False, space: SpaceOpt = None,
           set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
           num_samples: SamplesOpt = None, seed: SeedOpt = None, max_failures: FailuresOpt = 2,
           optuna_storage: OptunaStorageOpt = None, budget_minutes: BudgetMinutesOpt = None,
           budget_epochs: BudgetEpochsOpt = None, dry_run: DryRunOpt = False) -> None:
    """Phase 3: long runs of a Bayesian search around phase 2's best (its loss and optimizer
    fixed, `relative: true` ranges centred on its values); each trial keeps its best epoch.

    Writes results/NAME/phase3/ (trials.csv, best.json, ray/) and the study NAME-phase3 in the
    experiment's Optuna storage. Needs phase 2's results.
    """
    _phase_command("phase3", **locals())


@app.command()
def protocol(name: NameOpt = "default", quick: QuickOpt = False, resume: ResumeOpt = False, spaces: SpacesOpt = None,
             set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
             storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
             seed: SeedOpt = None, max_failures: FailuresOpt = 2, optuna_storage: OptunaStorageOpt = None,
             dry_run: DryRunOpt = False) -> None:
    """Phases 1, 2 and 3 one after the other, in one Ray session (all space files are checked
    before the first trial). With --resume, finished phases are kept, an interrupted one goes on.
    """
    given = dict(locals())
    given["spaces_dir"] = given.pop("spaces")
    del given["dry_run"]
    if dry_run:
        from .tune import preview

        typer.echo(preview.protocol(_search_options(**given)))
        return
    from .report import report_after_run
    from .tune.phases import run_protocol

    opts = _search_options(**given)
    _report_outcomes(_registering_the_last(run_protocol(opts)))
    report_after_run(opts.results / opts.name)  # the experiment's report: a section per phase


@app.command()
def confirm(
    path: Annotated[Path, typer.Argument(help="results/EXP (its last finished phase: phase3, else phase2, else "
                                               "phase1) or one finished phase's folder")],
    top: Annotated[Optional[int], typer.Option("--top", help="the phase's top K distinct configurations, best "
                                               "first (default 3)")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="new training seeds per configuration, 2 or more "
                                                 "(default 3: a wide interval)")] = None,
    resume: ResumeOpt = False, address: AddressOpt = None,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: the "
                                                        "phase's own store)")] = None,
    storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
    max_failures: FailuresOpt = 2,
) -> None:
    """Train the top configurations of an experiment's last finished phase again with new seeds,
    on the phase's budget (its train.epochs and data.fraction), and say whether the winner's lead
    is larger than the seed-to-seed spread: each configuration's mean, sd and Student t 95%
    interval over the seeds; the lead holds when the winner's mean exceeds the runner-up's by
    more than their pooled sd (docs/tune.md, "Confirming a winner").

    Writes results/EXP/confirm/: top1/, top2/, ... (a grid phase over the seeds per
    configuration: trials.csv, best.json, ray/; an MLflow parent run each), confirm.json and
    confirm.md. Prints the table and the verdict on stderr and one JSON line on stdout.
    """
    from .results.confirm import confirm_table
    from .tune.confirm import confirm_experiment
    from .tune.phases import Options
    from .tune.runner import RunFailed

    opts = Options(resume=resume, address=address, tracking_uri=tracking_uri, storage=storage,
                   gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, max_failures=max_failures)
    try:
        prepared, document = confirm_experiment(path, top, seeds, opts, address)
    except RunFailed as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None
    typer.echo(confirm_table(document), err=True)
    typer.echo(f"{document['note']}\nrule: {document['rule']}\nverdict: {document['verdict']['text']}", err=True)
    typer.echo(json.dumps({"confirm": str(prepared.root), "phase": document["phase"], "seeds": document["seeds"],
                           "verdict": document["verdict"]["text"], "clear": document["verdict"]["clear"]}))


@app.command()
def ui(
    name: Annotated[Optional[str], typer.Option("--name", help="only this experiment's Optuna storage "
                                                "(default: every experiment's, results/*/optuna.db)")] = None,
    tracking_uri: TrackingOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on; 127.0.0.1 keeps the UIs to this machine "
                                      "(0.0.0.0: every interface, for anyone who can reach it)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the MLflow UI's port")] = 5000,
    optuna_port: Annotated[int, typer.Option(help="the first optuna-dashboard's port; one dashboard per "
                                             "experiment's storage, on successive ports")] = 8080,
) -> None:
    """The MLflow UI over the tracking store (runs: a parent per phase, a child per trial) and
    optuna-dashboard over each experiment's Optuna storage (results/EXP/optuna.db, a study per
    phase, or the --optuna-storage its phases name; a phase run before that: its own
    results/EXP/PHASE/optuna.db). Prints their URLs; Ctrl-C (or SIGTERM) stops them all."""
    from .ui import ServiceDied, plan_services, serve

    services, notes = plan_services(Path("results"), name, tracking_uri, host, port, optuna_port)
    try:
        code = serve(services, notes)
    except ServiceDied as exc:
        _err(str(exc))
        code = 1
    raise typer.Exit(code=code)


@bench_app.command("tune")
def bench_tune(
    trials: Annotated[Optional[int], typer.Option(help="trials per variant, run one at a time (default: as many "
                                                  "as one actor of a quick phase 1 runs: its 16 trials 2 at a "
                                                  "time, 8)")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="epochs per trial (default: a quick phase 1 trial's)")] = None,
    rounds: Annotated[int, typer.Option(help="rounds of all variants (alternating order); medians are reported")] = 2,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """Goodput (the share of wall time in training steps and evaluations) and the platform's
    overhead per trial (process start, data set-up, Ray, checkpoints, MLflow): quick phase 1
    trials through Ray Tune (with and without reuse_actors) and through train() in a loop in a
    fresh process, measured in one run. Writes OUT/tune.json and OUT/tune.md."""
    _check_at_least(("--trials", 1 if trials is None else trials, 1), ("--epochs", 1 if epochs is None else epochs, 1),
                    ("--rounds", rounds, 1))
    from .bench.tune_overhead import run_tune_benchmark

    run_tune_benchmark(trials=trials, epochs=epochs, rounds=rounds, out_dir=out)


@bench_app.command("gpu")
def bench_gpu(
    batch: Annotated[int, typer.Option(help="pairs per step (seed 001: 256)")] = 256,
    steps: Annotated[int, typer.Option(help="timed steps (after 3 warm-up steps)")] = 20,
    precision: Annotated[str, typer.Option(help="bf16, fp16 or fp32 (autocast)")] = "bf16",
    device: Annotated[str, typer.Option(help="cuda, cuda:N, or cpu (slow; no share of peak)")] = "cuda",
    size: Annotated[int, typer.Option(help="image side in pixels")] = 224,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """Seed 001's model at full size (ResNet-50 + DistilBERT, random weights, nothing
    downloaded): samples/s of clipsearch's training step and the share of the GPU's peak dense
    bf16 FLOP/s it reaches (FLOPs counted by torch). Writes OUT/gpu.json and OUT/gpu.md."""
    import torch

    from .bench.gpu_step import run_gpu_step_benchmark

    _check_at_least(("--batch", batch, 1), ("--steps", steps, 1), ("--size", size, 1))
    if precision not in ("bf16", "fp16", "fp32"):
        raise InputError(f"unknown precision {precision!r}", where="--precision", fix="use bf16, fp16 or fp32")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("no CUDA device on this machine", where="--device",
                         fix="run it where a GPU is, or pass --device cpu for a slow CPU figure")
    run_gpu_step_benchmark(batch=batch, steps=steps, precision=precision, device=device, size=size, out_dir=out)


@bench_app.command("summary")
def bench_summary(
    out: Annotated[Path, typer.Option(help="the benchmarks' folder")] = Path("results/benchmarks"),
) -> None:
    """Rebuild OUT/README.md: every benchmark's headline figures in one table beside their
    anchors, with the command that reruns each and the machine, versions and date it was
    measured on (read from the benchmarks' JSON files; every bench command also rebuilds it)."""
    from .bench.summary import write_index

    typer.echo(str(write_index(out)))


@bench_app.command("search")
def bench_search(
    name: Annotated[str, typer.Option(help="where the searches run: results/NAME/grid, and for search seed K "
                                      "the experiment NAME-seedK in results/NAME/NAME-seedK/phase1..3; an existing "
                                      "one is gone on with, finished phases kept")]
    = "bench-search",
    seeds: Annotated[int, typer.Option(help="search seeds 0..SEEDS-1, a protocol run for each: a seed is the seed of "
                                       "its Optuna samplers only (every trial trains with the config's seed); the "
                                       "verdict is on the medians over all of them")] = 5,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """Search efficiency on the embedded task: the quick three-phase protocol (TPE, a grid of its
    best optimizer x losses x learning rates, a long run of the best), run once per search seed,
    against two anchors over the same space (search_spaces/bench_search/: 3 losses x 3
    optimizers x 2 learning rates, 10 epochs a cell): the exhaustive grid, run once, and random
    search given each seed's epochs, replayed from the grid's recorded curves rather than trained
    (a cell trains the same way each time). The best objective each reaches and the epochs each
    spends, per seed, with the median and the spread. The grid and 5 seeds take about 20 minutes
    on a 2-core CPU. Writes OUT/search.json and OUT/search.md."""
    from .bench.search import run_search_benchmark
    from .report import report_after_run

    _check_at_least(("--seeds", seeds, 1))
    # each phase ends with its report, as every search command's does
    typer.echo(str(run_search_benchmark(name=name, out_dir=out, seeds=seeds, after_phase=report_after_run)))


@bench_app.command("reliability")
def bench_reliability(
    kills: Annotated[int, typer.Option(help="times the driver of a quick phase 1 is SIGKILLed (at a random "
                                       "moment after its first epoch) and resumed; 0: no kill loop")] = 3,
    trials: Annotated[int, typer.Option(help="trials of that phase")] = 4,
    census: Annotated[bool, typer.Option(help="also run the quick fault and bad-input tests (tests/, from the "
                                         "repository root) and count their cases")] = True,
    seed: Annotated[int, typer.Option(help="seed of the kill moments")] = 0,
    soak: Annotated[bool, typer.Option(help="also run the soak: a quick phase 1 of SOAK_TRIALS one-epoch trials "
                                       "to its end, its driver's RSS sampled each second and held to a bound "
                                       "(10-20 minutes on 2 cores)")] = False,
    soak_trials: Annotated[int, typer.Option(help="trials of the soak")] = 100,
    node_loss: Annotated[bool, typer.Option(help="also run the node loss: a two-node Ray cluster on this machine, a "
                                            "quick phase 1 of two trials on it, the worker node's raylet SIGKILLed "
                                            "mid-epoch; its trial must go on from its checkpoint (3-5 minutes)")] = False,
    oom: Annotated[bool, typer.Option(help="also run the out-of-memory trial: a quick phase 1 of three trials, one "
                                      "grown until Ray's memory monitor kills it (RAY_memory_usage_threshold set a "
                                      "few GiB above the memory in use); it must error with the reason in "
                                      "trials.csv and the others finish (2-3 minutes)")] = False,
    tracking_outage: Annotated[bool, typer.Option(help="also run the tracking outage: a quick phase 1 logging to "
                                                  "an mlflow server on 127.0.0.1, the server killed after the first "
                                                  "epoch and started again 60 s later; every trial's run must end "
                                                  "FINISHED with all its epochs, none RUNNING (4-10 minutes)")] = False,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/benchmarks"),
) -> None:
    """Faults survived and bad inputs tried, counted: the census of the quick fault and bad-input
    tests, a quick phase 1 killed and resumed KILLS times (with a trial worker killed once), and
    with --soak a long quick phase 1 whose driver memory is bounded, with --node-loss a node lost
    under a trial, with --oom a trial out of memory, with --tracking-outage the MLflow server
    down a minute mid-phase. Writes OUT/reliability.json and
    OUT/reliability.md (per category: tried, passed, lost); the parts not run this time are kept
    from the previous file, each dated by its own run (soak only: --no-census --kills 0 --soak)."""
    from .bench.reliability import run_reliability_benchmark

    _check_at_least(("--kills", kills, 0), ("--trials", trials, 1), ("--soak-trials", soak_trials, 4))
    typer.echo(str(run_reliability_benchmark(out, kills=kills, trials=trials, census=census, seed=seed,
                                             soak=soak, soak_trials=soak_trials, node_loss=node_loss, oom=oom,
                                             tracking_outage=tracking_outage)))


# ------------------------------------------------------------------------------ sweeps (image-only protocols)

sweep_app = typer.Typer(help="Searches of the image-only protocols (supervised vs SimCLR vs SupCon, "
                             "SupCon fine-tuning); results go to results/NAME/<sweep>/.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")
SpaceFileOpt = Annotated[Optional[Path], typer.Option("--space", help="search-space YAML (default: "
                                                      "search_spaces/<sweep>.yaml, <sweep>_quick.yaml with --quick)")]


@sweep_app.command("classify")
def sweep_classify(name: NameOpt = "default", quick: QuickOpt = False, space: SpaceFileOpt = None,
                   methods: Annotated[Optional[str], typer.Option("--methods", help="comma-separated subset of "
                                                                   "ce,ntxent,supcon (default: every method "
                                                                   "of the space file)")] = None,
                   set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
                   storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
                   num_samples: SamplesOpt = None, seed: SeedOpt = None, max_failures: FailuresOpt = 2,
                   optuna_storage: OptunaStorageOpt = None, budget_minutes: BudgetMinutesOpt = None,
                   budget_epochs: BudgetEpochsOpt = None, dry_run: DryRunOpt = False) -> None:
    """Supervised (cross-entropy, ReduceLROnPlateau) vs SimCLR (NT-Xent, two augmented views) vs
    SupCon pre-training + a linear probe (seed 002), each tuned with Optuna + ASHA on the kNN
    accuracy of the validation split; then each best model scored once on the held-out test split.

    Data: the embedded MNIST 5,000 by default; --set data.source=ROOT for an ImageFolder
    (ROOT/train/<class>/*, optional ROOT/test/<class>/*). Writes results/NAME/classify/:
    METHOD/ (trials.csv, best.json, final.json, embeddings.npz, confusion_matrix.json,
    report.html), comparison.csv, comparison.md and report.html (the table, t-SNE plots and
    confusion matrices). Prints one JSON line per method and one with the table's path.
    """
    from .tune.classify import run_classify
    from .tune.runner import RunFailed

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    given = {k: v for k, v in locals().items()
             if k not in ("methods", "chosen", "run_classify", "RunFailed", "dry_run")}
    if dry_run:
        from .tune import preview

        typer.echo(preview.classify(_search_options(**given), chosen))
        return
    try:
        results = run_classify(_search_options(**given), chosen)
    except RunFailed as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None
    from .report.classify import write_classify_report

    write_classify_report(results[0].outcome.phase_dir.parent)  # the table, each method's t-SNE and confusion
    for r in results:  # each method's search ends with its best model
        _register_best_model(r.outcome)
    for r in results:
        typer.echo(json.dumps({"method": r.method, "results": str(r.outcome.phase_dir), "trials": r.outcome.trials,
                               "errored": r.outcome.errored, "seconds": round(r.outcome.seconds, 1),
                               **{k: r.final[k] for k in ("trial_id", "best_epoch", "test_acc1", "probe_acc1")}}))
    typer.echo(json.dumps({"comparison": str(results[0].outcome.phase_dir.parent / "comparison.md")}))


@sweep_app.command("supcon")
def sweep_supcon(name: NameOpt = "default", quick: QuickOpt = False, resume: ResumeOpt = False,
                 space: Annotated[Optional[Path], typer.Option("--space", help="sweep space YAML (default: search_spaces/"
                                                               "supcon_sweep.yaml, supcon_sweep_quick.yaml with --quick)")] = None,
                 set_: PhaseSetOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
                 storage: StorageOpt = None, gpus_per_trial: GpusOpt = 0.0, cpus_per_trial: CpusOpt = 1.0,
                 seed: SeedOpt = None, max_failures: FailuresOpt = 2, dry_run: DryRunOpt = False) -> None:
    """SupCon fine-tuning of a vision tower for cross-domain query/gallery retrieval (seed 000).

    1. zero-shot baselines: each tower of the space's `baselines:` (and the tuned one) ranks the
    gallery untouched; 2. a grid of one-epoch runs over learning rate x weight decay x
    temperature; 3. the best cell trained `long_epochs` epochs, keeping its best epoch, and its
    submission (each query's top-10 gallery files). Score = 600 Hit@1 + 300 Hit@5 + 100 Hit@10 (of
    1000). --quick: scikit-learn's 8x8 digits as queries against a held-out MNIST gallery,
    trained on the rest of MNIST.

    Writes results/NAME/supcon/: baselines.csv, sweep/ and long/ (trials.csv, best.json, ray/),
    results.csv and results.md (one row per baseline, per sweep cell, and the long run),
    submission.json, final.json. MLflow: a parent run per stage, a child run per trial or tower.
    Prints one JSON line with the final scores.
    """
    from .tune.runner import RunFailed
    from .tune.supcon import run_supcon

    opts = _search_options(**{k: v for k, v in locals().items() if k not in ("RunFailed", "run_supcon", "dry_run")})
    if dry_run:
        from .tune import preview

        typer.echo(preview.supcon(opts))
        return
    try:
        run = run_supcon(opts)
    except RunFailed as exc:
        _err(str(exc))
        raise typer.Exit(code=1) from None
    _register_best_model(run.long)  # the long run ends the sweep
    baseline = next(b for b in run.baselines if b["tower"] == run.final["tower"])
    typer.echo(json.dumps({"results": str(run.root), "final": {k: run.final[k] for k in ("score", "hit1", "hit5", "hit10",
                                                                                         "mapr", "best_epoch")},
                           "zero_shot_score": baseline["score"], "sweep_trials": run.sweep.trials,
                           "config": {k: run.final["config"].get(k) for k in ("optimizer.lr", "optimizer.weight_decay",
                                                                              "loss.temperature")}}))


# ------------------------------------------------------------------------------ space files

space_app = typer.Typer(help="Search-space files: check one, and see what it would run, before running it.",
                        no_args_is_help=True)
app.add_typer(space_app, name="space")


@space_app.command("check")
def space_check(
    file: Annotated[Optional[Path], typer.Argument(help="the space YAML (default: the shipped "
                                                   "search_spaces/PHASE.yaml of --phase)")] = None,
    phase: Annotated[Optional[str], typer.Option("--phase", help="the search that reads it: phase1, phase2, phase3, "
                                                 "classify, supcon_sweep or grid (default: from the file's name, "
                                                 "e.g. phase1_quick.yaml: phase1)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="with no FILE: the shipped PHASE_quick.yaml")] = False,
    set_: PhaseSetOpt = None,
) -> None:
    """Load and check a space file as its search would, and print what it runs: the base, the
    metric, the sampler and its random start-up trials, ASHA's rungs, each searched parameter with
    its distribution and `when:` condition, the constants, the trials and the epochs they may
    spend. What earlier phases decide (phase 2's optimizers, phase 3's centre) is said to be so.
    Ray is not started; nothing is written. Bad input: one line, exit 2."""
    from .tune import preview

    typer.echo(preview.space_file(file, phase, quick, set_ or []))


# ------------------------------------------------------------------------------ MLflow

mlflow_app = typer.Typer(help="The MLflow side of the searches: what a tracking store that was down has not got.",
                         no_args_is_help=True)
app.add_typer(mlflow_app, name="mlflow")


@mlflow_app.command("replay")
def mlflow_replay(
    path: Annotated[Path, typer.Argument(help="a phase folder (results/EXP/PHASE) or an experiment's (results/EXP)")],
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="the store to replay to (default: "
                                                        "the one each phase.json names)")] = None,
) -> None:
    """Log what a phase could not while its tracking store did not answer: the calls queued in
    each PHASE/mlflow_pending.jsonl under PATH, made now in the order the phase made them (runs
    opened, metrics, artifacts, the runs' ends: none is left RUNNING). A phase replays its own
    queue as soon as the store answers again; this is for what was left when it ended. Exit 0
    when nothing is left queued, 1 while the store still does not answer (run it again later)."""
    from .tracking_outbox import pending_phases, replay_pending

    if not path.is_dir():
        raise InputError("is not a folder", where=str(path), fix="give results/EXP or results/EXP/PHASE")
    phases = pending_phases(path)
    if not phases:
        typer.echo(f"{path}: nothing queued for MLflow", err=True)
        return
    left = 0
    for phase_dir in phases:
        replayed, still = replay_pending(phase_dir, tracking_uri)
        typer.echo(f"{phase_dir}: {replayed} MLflow call(s) replayed" + (f"; {still}" if still else ""), err=True)
        left += still is not None
    if left:
        raise typer.Exit(code=1)


def _reflow_help(*apps: typer.Typer) -> None:
    """Each command's docstring with a paragraph's lines joined. typer's rich help joins the first
    paragraph's lines but keeps the rest's line breaks, then wraps those lines again at the
    terminal's width: every paragraph after the first came out ragged."""
    for group in apps:
        for command in group.registered_commands:
            doc = command.callback.__doc__ if command.callback else None
            if doc and command.help is None:
                paragraphs = inspect.cleandoc(doc).split("\n\n")
                command.callback.__doc__ = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_reflow_help(app, bench_app, sweep_app, space_app, mlflow_app)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # usage errors come here, to be written as one line
    except InputError as exc:
        _err(exc.one_line())
        sys.exit(2)
    except typer.TyperException as exc:  # typer's click: an unknown option, a missing or malformed value
        if hasattr(exc, "show") and type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # a bare command prints its help, as before
        else:
            _err(_usage_line(exc))
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        _err(f"{exc.filename or 'a results file'}: {exc.strerror} (the disk, quota or file-size limit is full); "
             "fix: free space, then run the same command again (phases: with --resume)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


#: the write errors of a full disk, a full quota and a file-size limit (RLIMIT_FSIZE)
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _usage_line(exc: Exception) -> str:
    """A usage error as the contract's one line: what was wrong and where the help is."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "clipsearch"
    return f"{command}: {message}; fix: see `{command} --help`"


if __name__ == "__main__":
    main()
