"""Data sets that need no download: scikit-learn's bundled sets and seeded synthetic ones."""

from __future__ import annotations

import numpy as np
from sklearn import datasets

from dltrain.data.arrays import ArrayData
from dltrain.tasks import BINARY, MULTICLASS, REGRESSION


def digits() -> ArrayData:
    """scikit-learn's 1,797 8x8 handwritten digits, as 1x8x8 images scaled to [0, 1]."""
    bunch = datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    return ArrayData("digits", images, bunch.target.astype(np.int64), MULTICLASS, tabular=False)


def _sklearn_table(name: str, loader, task: str) -> ArrayData:
    bunch = loader()
    dtype = np.float32 if task == REGRESSION else np.int64
    return ArrayData(name, bunch.data.astype(np.float32), bunch.target.astype(dtype), task)


def iris() -> ArrayData:
    """Fisher's iris: 150 flowers, 4 features, 3 classes."""
    return _sklearn_table("iris", datasets.load_iris, MULTICLASS)


def wine() -> ArrayData:
    """Wine recognition: 178 wines, 13 features, 3 classes."""
    return _sklearn_table("wine", datasets.load_wine, MULTICLASS)


def breast_cancer() -> ArrayData:
    """Breast cancer Wisconsin: 569 samples, 30 features, binary."""
    return _sklearn_table("breast_cancer", datasets.load_breast_cancer, BINARY)


def diabetes() -> ArrayData:
    """Diabetes progression: 442 patients, 10 features, regression."""
    return _sklearn_table("diabetes", datasets.load_diabetes, REGRESSION)


def linear(n_samples: int = 1000, n_features: int = 5, noise: float = 0.1, seed: int = 0) -> ArrayData:
    """Synthetic regression y = w.x + b + noise, with w and b drawn from the seed."""
    rng = np.random.default_rng(seed)
    weights, bias = rng.normal(size=n_features), rng.normal()
    x = rng.normal(size=(n_samples, n_features))
    y = x @ weights + bias + noise * rng.normal(size=n_samples)
    return ArrayData("linear", x.astype(np.float32), y.astype(np.float32), REGRESSION)


def sine(n_samples: int = 1000, seq_len: int = 20, noise: float = 0.05, seed: int = 0) -> ArrayData:
    """Synthetic forecasting: windows of sine waves of random frequency and phase, target the next value."""
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.1, 0.5, size=(n_samples, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_samples, 1))
    t = np.arange(seq_len + 1)[None, :]
    waves = np.sin(freq * t + phase) + noise * rng.normal(size=(n_samples, seq_len + 1))
    features = waves[:, :seq_len, None].astype(np.float32)  # (samples, time, 1 feature)
    return ArrayData("sine", features, waves[:, seq_len].astype(np.float32), REGRESSION, tabular=False)
