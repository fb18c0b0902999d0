"""The linear probe: a logistic regression on frozen embeddings (SimCLR's linear evaluation).

Fitted on the training split's embeddings only, scored on the split it is given to score
(the held-out test split in the classification protocol). scikit-learn's LogisticRegression
(multinomial, L-BFGS) on standardised features: the optimum it finds does not depend on a
learning rate or an epoch count to tune, so the probe measures the embeddings rather than a
second training run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ProbeResult:
    accuracy: float            # % of the scored samples classified correctly
    predictions: np.ndarray    # (N,) predicted class ids of the scored samples


def linear_probe(train_emb: np.ndarray, train_labels: np.ndarray, test_emb: np.ndarray, test_labels: np.ndarray,
                 c: float = 1.0, max_iter: int = 1000, seed: int = 0) -> ProbeResult:
    """Fit on (train_emb (N, d), train_labels (N,)), score on (test_emb (M, d), test_labels (M,))."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(np.unique(train_labels)) < 2:
        raise ValueError("linear_probe: the training labels hold one class; a classifier needs two or more")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with threadpool_limits(1):  # the cores are the trials'; one thread fits a probe of this size in seconds
        probe.fit(np.asarray(train_emb, dtype=np.float64), train_labels)
        predictions = probe.predict(np.asarray(test_emb, dtype=np.float64))
    return ProbeResult(float(100.0 * (predictions == np.asarray(test_labels)).mean()), predictions.astype(np.int64))
