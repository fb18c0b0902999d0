"""clipsearch: hyperparameter search for contrastive image-text and image-only training.

The package root is the library (data, models, losses, optim, metrics, train); it knows
nothing of Ray, MLflow or the CLI. `clipsearch.tune` is the only place that imports Ray.
"""

__version__ = "0.1.0"
