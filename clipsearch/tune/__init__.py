"""Ray Tune for clipsearch: search spaces, the trainable, the three phases of the protocol.

The only package that imports Ray. Its modules that need no Ray (space, and phases outside
its functions) import none at module level, so that every input is checked before a cluster
starts. A phase's files (trials.csv, best.json, phase.json, history/) and the ranking rule live
in clipsearch.results, which report reads too.
- space: search-space files, validated against the config and the registries
- trainable: one trial = one clipsearch.train.train run (Ray)
- callbacks: a child MLflow run per trial under the phase's parent run (Ray)
- phases: what phase 1 (Optuna + ASHA), phase 2 (grid) and phase 3 (Optuna) run, checked
  before Ray starts; the protocol
- runner: a prepared phase on Ray Tune, and its results (Ray)
- cluster: a local Ray cluster or --address (Ray)
"""

import os

# Tune warns each time a checkpoint forces an experiment snapshot; with CheckpointConfig(
# num_to_keep=1) that is by design (the snapshot is what makes --resume lose nothing).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
