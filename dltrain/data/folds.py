"""Cross-validation folds: the rows of each fold's training, validation and test parts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from dltrain.data.arrays import ArrayData
from dltrain.data.splits import Rows, smallest_class, split_rows
from dltrain.data.spec import REGRESSION
from dltrain.errors import DataError


def fold_rows(data: ArrayData, folds: int, seed: int, val_fraction: float, test_fraction: float,
              all_data: bool = False) -> list[Rows]:
    """`folds` (train, val, test) row splits, stratified by class and seeded.

    The folds cover the training and validation rows, and every fold is tested on the same held-out test
    split; with all_data they cover every row, and each fold is tested on its own validation part.
    """
    if all_data:
        pool, test = np.arange(len(data.targets)), None
    else:
        train, val, test = split_rows(data, val_fraction, test_fraction, seed)
        pool = np.sort(np.concatenate([train, val]))
    labels = data.targets[pool]
    if data.task == REGRESSION:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    else:
        shown, count = smallest_class(data, labels)
        if count < folds:
            raise DataError(f"data={data.name}: class '{shown}' has {count} row(s) to cross-validate; "
                            f"cv.folds={folds} needs at least {folds} per class (fewer folds, or cv.all_data=true)")
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [(pool[fit], pool[held], pool[held] if test is None else test)
            for fit, held in splitter.split(pool, labels)]


@dataclass(frozen=True)
class Fold:
    """One fold of a cross-validation: the data set (loaded once for all folds), its rows, its place."""

    data: ArrayData
    rows: Rows
    number: int
    of: int
