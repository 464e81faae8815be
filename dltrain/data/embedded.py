"""Data sets that need no download: scikit-learn's bundled sets and seeded synthetic ones."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn import datasets

from dltrain.data.arrays import ArrayData, as_frame
from dltrain.data.spec import BINARY, IMAGE, MULTICLASS, REGRESSION, SEQUENCE, TEXT
from dltrain.errors import DataError
from dltrain.config.schema import NonNegativeInt, NonNegativeNumber, PositiveInt


def digits() -> ArrayData:
    """scikit-learn's 1,797 8x8 handwritten digits, as 1x8x8 images scaled to [0, 1]."""
    bunch = datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    names = [str(n) for n in bunch.target_names]
    return ArrayData("digits", images, bunch.target.astype(np.int64), MULTICLASS, IMAGE, class_names=names)


def _sklearn_table(name: str, loader, task: str) -> ArrayData:
    bunch = loader()
    features = as_frame(bunch.data.astype(np.float32), [str(n) for n in bunch.feature_names])
    if task == REGRESSION:
        return ArrayData(name, features, bunch.target.astype(np.float32), task)
    names = [str(n) for n in bunch.target_names]
    return ArrayData(name, features, bunch.target.astype(np.int64), task, class_names=names)


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


def linear(n_samples: PositiveInt = 1000, n_features: PositiveInt = 5, noise: NonNegativeNumber = 0.1,
           seed: NonNegativeInt = 0) -> ArrayData:
    """Synthetic regression y = w.x + b + noise, with w and b drawn from the seed."""
    weights, bias = true_linear_weights(n_features, seed)
    rng = np.random.default_rng([seed, 1])
    x = rng.normal(size=(n_samples, n_features))
    y = x @ weights + bias + noise * rng.normal(size=n_samples)
    return ArrayData("linear", as_frame(x.astype(np.float32)), y.astype(np.float32), REGRESSION)


def true_linear_weights(n_features: int = 5, seed: int = 0) -> tuple[np.ndarray, float]:
    """The w and b that `linear` draws for this seed, to check what a model learned."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=n_features), float(rng.normal())


def sine(n_samples: PositiveInt = 1000, seq_len: PositiveInt = 20, noise: NonNegativeNumber = 0.05,
         target: Literal["next", "frequency"] = "next", seed: NonNegativeInt = 0) -> ArrayData:
    """Windows of noisy sine waves of random frequency and phase, shaped (samples, time, 1).

    target=next: forecast the next value (regression); target=frequency: is the wave's frequency above
    the middle of its range (binary classification).
    """
    if target not in ("next", "frequency"):
        raise DataError(f"data.target={target!r} is not a sine target: expected next or frequency")
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.1, 0.5, size=(n_samples, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_samples, 1))
    t = np.arange(seq_len + 1)[None, :]
    waves = np.sin(freq * t + phase) + noise * rng.normal(size=(n_samples, seq_len + 1))
    features = waves[:, :seq_len, None].astype(np.float32)
    if target == "next":
        return ArrayData("sine", features, waves[:, seq_len].astype(np.float32), REGRESSION, SEQUENCE)
    labels = (freq[:, 0] > 0.3).astype(np.int64)
    return ArrayData("sine", features, labels, BINARY, SEQUENCE, class_names=["low", "high"])


REVIEW_WORDS = {
    "positive": ("good", "great", "excellent", "wonderful", "loved", "amazing", "enjoyable", "superb", "pleasant",
                 "brilliant"),
    "negative": ("bad", "awful", "terrible", "boring", "hated", "poor", "dull", "horrible", "weak", "annoying"),
    "filler": ("the", "movie", "film", "plot", "acting", "was", "is", "story", "really", "very", "and", "a", "it",
               "this", "quite", "overall", "cast", "music", "ending", "scenes", "i", "thought", "so", "at", "times"),
}


def review_texts(n_samples: int = 1000, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Short synthetic movie reviews and their labels (1: positive): a few words of their own side among
    filler, some with "not" before a word of the other side ("not bad" in a positive one), 3% labelled wrong."""
    rng = np.random.default_rng([seed, 7])
    texts, labels = [], rng.integers(0, 2, size=n_samples)
    for label in labels:
        own, other = (REVIEW_WORDS["positive"], REVIEW_WORDS["negative"])[::1 if label else -1]
        words = list(rng.choice(REVIEW_WORDS["filler"], size=rng.integers(4, 13)))
        words += list(rng.choice(own, size=rng.integers(1, 4)))
        rng.shuffle(words)
        if rng.random() < 0.3:
            at = int(rng.integers(0, len(words) + 1))
            words[at:at] = ["not", str(rng.choice(other))]
        texts.append(" ".join(words))
    flipped = rng.random(n_samples) < 0.03
    return texts, np.where(flipped, 1 - labels, labels).astype(np.int64)


def reviews(n_samples: PositiveInt = 1000, max_length: PositiveInt = 32, embedding_size: PositiveInt = 32,
            seed: NonNegativeInt = 0) -> ArrayData:
    """Synthetic movie reviews (review_texts) as a text column to classify positive or negative: the same path
    as a CSV's data.text_column, word tokens and a vocabulary of the training split's words."""
    texts, labels = review_texts(n_samples, seed)
    text = {"column": "text", "analyzer": "word", "max_length": max_length, "min_count": 1,
            "max_vocabulary": 20000, "embedding_size": embedding_size}
    return ArrayData("reviews", pd.DataFrame({"text": texts}), labels, BINARY, TEXT,
                     class_names=["negative", "positive"], text=text)
