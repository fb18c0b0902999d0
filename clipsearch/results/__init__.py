"""What a search leaves on disk, and how to read and write it: no Ray, no plotly, no torch.

The room that tune (which writes a phase's files), report (which reads them) and the library
(a checkpoint, a cache entry) share, so that neither tune nor report imports the other:
- layout: every file and folder name of an experiment, a phase and a training run; PHASES
- atomic: the one atomic write (a temporary file beside the target, renamed into place)
- phase_files: trials.csv, best.json, phase.json, history/trial_ID.jsonl; JSON helpers
- ranking: which trials are best, compared at the same epoch; what each phase hands on

Import from here: `from clipsearch.results import TRIALS_CSV, read_trials_csv, rank_trials`.
"""

from .atomic import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from .layout import (BEST_DIR, BEST_JSON, BEST_MODEL_FILE, CHECKPOINT_FILE, COMPARISON_CSV, COMPARISON_MD,
                     CONFUSION_JSON, DRIVER_LOCK, EMBEDDINGS_NPZ, HISTORY_DIR, IMPORTANCE_JSON, OPTUNA_DB, PHASE_JSON, PHASES, PNG_DIR, PREVIOUS_CHECKPOINT_FILE,
                     RAY_DIR, REPORT_HTML, RUN_CONFIG_YAML, STATE_DIR, TRIALS_CSV, RunFolder, ray_run_dir)
from .phase_files import (append_history, best_summary, phase_study, ranked_rows, read_histories, read_history,
                          read_json, read_trials_csv, trial_rows, write_json, write_trials_csv)
from .ranking import (MODES, RULE, Ranked, TrialRecord, best_of, best_with, carried_from_best, phase2_axes,
                      rank_trials, section_values, top_optimizers, worst_value)

__all__ = [
    # layout
    "PHASES", "TRIALS_CSV", "BEST_JSON", "PHASE_JSON", "HISTORY_DIR", "OPTUNA_DB", "DRIVER_LOCK", "RAY_DIR", "ray_run_dir",
    "REPORT_HTML", "IMPORTANCE_JSON", "PNG_DIR", "EMBEDDINGS_NPZ", "CONFUSION_JSON", "COMPARISON_CSV", "COMPARISON_MD",
    "RunFolder", "RUN_CONFIG_YAML", "STATE_DIR", "CHECKPOINT_FILE", "PREVIOUS_CHECKPOINT_FILE", "BEST_DIR",
    "BEST_MODEL_FILE",
    # atomic
    "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text",
    # phase_files
    "write_json", "read_json", "append_history", "read_history", "read_histories",
    "trial_rows", "write_trials_csv", "read_trials_csv", "ranked_rows", "best_summary", "phase_study",
    # ranking
    "RULE", "MODES", "Ranked", "TrialRecord", "rank_trials", "best_of", "worst_value",
    "section_values", "top_optimizers", "best_with", "phase2_axes", "carried_from_best",
]
