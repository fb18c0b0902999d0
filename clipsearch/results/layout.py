"""Where a search keeps its files: every name of the on-disk layout, defined once for the code
that writes the files (tune, train, report) and the code that reads them (the next phase,
report, the CLI).

    results/EXP/                    an experiment: report.html (a section per phase)
      driver.lock                   held (flock) by the one driver running the experiment
      optuna.db                     its Optuna storage: a study per Optuna phase, named EXP-PHASE
                                    (--optuna-storage names another: a database URL, a journal file)
      PHASE/                        phase1, phase2, phase3 (PHASES), or a sweep's stage
        trials.csv best.json phase.json
        history/trial_ID.jsonl      every epoch a trial reported (the driver's own record)
        optuna.db                   a phase run before the experiment's storage: its own study
        ray/                        Ray Tune's experiment folder (in --storage when given)
        ray-2/, ray-3/ ...          the runs that extended a finished phase (--resume --num-samples)
        report.html importance.json report_png/
        embeddings.npz confusion_matrix.json   (a classification method's test split)
      classify/comparison.csv comparison.md       the classification protocol's table
      confirm/confirm.json confirm.md             `clipsearch confirm`: the top configurations on new seeds
        top1/ top2/ ...             one phase per configuration, a trial per seed

    RUN/                            one training run (train(run_dir=...), a trial's checkpoint)
      config.yaml                   the resolved config it ran
      checkpoint/state.pt           the latest state to resume from
      checkpoint/state.prev.pt      the one before it (what a resume falls back to)
      best/model.pt                 the best epoch's weights
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the CLIP protocol's phases, in the order they run (each one's folder under results/EXP)
PHASES = ("phase1", "phase2", "phase3")

# ------------------------------------------------------------------------------ a phase's folder
TRIALS_CSV, BEST_JSON, PHASE_JSON = "trials.csv", "best.json", "phase.json"
HISTORY_DIR = "history"
#: the experiment's Optuna storage (results/EXP/optuna.db); in a phase folder, a phase's own
#: study from before the experiment had one
OPTUNA_DB = "optuna.db"
#: in results/EXP: the lock its running driver holds (clipsearch.tune.driver_lock); never deleted
DRIVER_LOCK = "driver.lock"
#: Ray Tune's own experiment folder inside the phase's storage path
RAY_DIR = "ray"


def ray_run_dir(run: int) -> str:
    """The Tune experiment folder of a phase's `run`-th run: 1 is the phase itself (RAY_DIR),
    2, 3, ... the runs that extended it once it had finished."""
    return RAY_DIR if run == 1 else f"{RAY_DIR}-{run}"
REPORT_HTML, IMPORTANCE_JSON, PNG_DIR = "report.html", "importance.json", "report_png"
EMBEDDINGS_NPZ, CONFUSION_JSON = "embeddings.npz", "confusion_matrix.json"
#: the classification protocol's table (tune writes it, the protocol's report reads it)
COMPARISON_CSV, COMPARISON_MD = "comparison.csv", "comparison.md"
#: `clipsearch confirm`'s folder in results/EXP (a phase per configuration, topN/) and its verdict
CONFIRM_DIR, CONFIRM_JSON, CONFIRM_MD = "confirm", "confirm.json", "confirm.md"

# ------------------------------------------------------------------------------ a training run's folder
RUN_CONFIG_YAML = "config.yaml"
STATE_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
#: the checkpoint before the latest: what a run resumes from when state.pt is truncated or lost
PREVIOUS_CHECKPOINT_FILE = "state.prev.pt"
BEST_DIR, BEST_MODEL_FILE = "best", "model.pt"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one training run's folder (a trial's Tune checkpoint holds one too)."""

    root: Path

    @property
    def config(self) -> Path:
        return Path(self.root) / RUN_CONFIG_YAML

    @property
    def state_dir(self) -> Path:
        return Path(self.root) / STATE_DIR

    @property
    def checkpoint(self) -> Path:
        return self.state_dir / CHECKPOINT_FILE

    @property
    def previous_checkpoint(self) -> Path:
        return self.state_dir / PREVIOUS_CHECKPOINT_FILE

    @property
    def best_model(self) -> Path:
        return Path(self.root) / BEST_DIR / BEST_MODEL_FILE
