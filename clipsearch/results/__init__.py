"""What a search leaves on disk, and how to read it: no Ray, no plotly, no torch.

The room that tune (which writes a phase's files) and report (which reads them) both import,
so that neither imports the other:
- phase_files: trials.csv, best.json, phase.json, history/trial_ID.jsonl; JSON helpers and the
  atomic write every writer uses
- ranking: which trials are best, compared at the same epoch; what each phase hands on
"""

from .phase_files import (BEST_JSON, HISTORY_DIR, PHASE_JSON, TRIALS_CSV, append_history, atomic_write_text,
                          best_summary, ranked_rows, read_history, read_history_file, read_json, read_trials_csv,
                          trial_rows, write_json, write_trials_csv)
from .ranking import (RULE, Ranked, TrialRecord, best_with, carried_from_best, phase2_axes, rank_trials,
                      section_values, top_optimizers)

__all__ = [
    "TRIALS_CSV", "BEST_JSON", "PHASE_JSON", "HISTORY_DIR",
    "atomic_write_text", "write_json", "read_json",
    "append_history", "read_history", "read_history_file",
    "trial_rows", "write_trials_csv", "read_trials_csv", "ranked_rows", "best_summary",
    "RULE", "Ranked", "TrialRecord", "rank_trials",
    "section_values", "top_optimizers", "best_with", "phase2_axes", "carried_from_best",
]
