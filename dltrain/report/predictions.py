"""A trained module's predictions as a table: the class and each class's probability, or the value; with the
true answer beside them for a labelled split. Shared by training (test_predictions.csv), dltrain-predict and
dltrain-serve; new inputs are predicted row by row (predict_rows): a row that cannot be predicted is named,
never given a class with empty or NaN probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from dltrain.data.spec import BINARY, MULTICLASS

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from dltrain.data.batches import TensorBatchDataset
    from pytorch_lightning import LightningModule as TrainingModule  # dltrain.training.module.TrainingModule


def prediction_table(module: TrainingModule, features: Tensor | Iterable[Tensor], batch_size: int = 1024
                     ) -> pd.DataFrame:
    """A DataFrame of the module's predictions: the class and each class's probability, or the value (in
    batches of `batch_size` rows, or in the batches `features` yields, under inference_mode)."""
    import pandas as pd

    spec, numbers = module.spec, output_numbers(module, features, batch_size)
    if spec.task not in (MULTICLASS, BINARY):
        return pd.DataFrame({"prediction": numbers[:, 0]})
    names = spec.labels()
    columns = {"prediction": [names[i] for i in numbers.argmax(axis=1)]}
    return pd.DataFrame(columns | {f"prob_{name}": numbers[:, i] for i, name in enumerate(names)})


def output_numbers(module: TrainingModule, features: Tensor | Iterable[Tensor], batch_size: int = 1024
                   ) -> np.ndarray:
    """The module's outputs as what a prediction reads: a classifier's probabilities (rows x classes, the class
    is their argmax), or a regression's value in the target's units (rows x 1); float32, under inference_mode.
    dltrain-serve calls it on the rows of concurrent requests gathered into one forward pass."""
    import torch

    spec = module.spec
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        batches = features.split(batch_size) if isinstance(features, torch.Tensor) else features
        outputs = torch.cat([module(batch.to(module.device)).float().cpu() for batch in batches])
    module.train(was_training)
    temperature = getattr(module, "temperature", 1.0)  # the calibration's; 1: none
    if spec.task == MULTICLASS:
        return torch.softmax(outputs / temperature, dim=1).numpy()
    if spec.task == BINARY:
        positive = torch.sigmoid(outputs[:, 0] / temperature).numpy()
        return np.stack([1 - positive, positive], axis=1)
    return (outputs[:, :1] * spec.target_std + spec.target_mean).numpy()


NOT_PREDICTED = "not_predicted"  # the column that says why a row has no prediction


def predict_rows(module: TrainingModule, features: Tensor, faults: dict[int, str], batch_size: int = 1024
                 ) -> tuple[pd.DataFrame, dict[int, str]]:
    """prediction_table of every row but those in `faults` ({row: why}, from reading them), one table row per
    input row: a row left out, or whose output is not finite (NaN or infinite: never a prediction), has empty
    prediction columns and its reason in a not_predicted column (present only when some row has one).
    Returns the table and every row left out ({row: why})."""
    import pandas as pd
    import torch

    faults = dict(faults)
    kept = np.array([row for row in range(len(features)) if row not in faults], dtype=np.int64)
    if len(kept):
        predicted = prediction_table(module, features[torch.from_numpy(kept)], batch_size)
        numbers = predicted.drop(columns="prediction") if len(predicted.columns) > 1 else predicted
        finite = np.isfinite(numbers.to_numpy(dtype="float64")).all(axis=1)
        faults.update({int(kept[i]): "the model's output for it is not finite (NaN or infinite)"
                       for i in np.flatnonzero(~finite)})
        predicted.index = kept
        table = predicted.reindex(range(len(features)))
    else:
        table = pd.DataFrame({"prediction": [np.nan] * len(features)})
    if faults:
        table.loc[list(faults), :] = np.nan
        table[NOT_PREDICTED] = pd.Series(faults).reindex(range(len(features)))
    return table, dict(sorted(faults.items()))


def left_out_line(faults: dict[int, str], name: Callable[[int], str], what: str = "not predicted") -> str:
    """One line: how many rows were left out, why (the first reason, and how many others there are), and
    which (`name(row)`, the first 20)."""
    rows, reasons = list(faults), list(dict.fromkeys(faults.values()))
    why = reasons[0] + (f"; and {len(reasons) - 1} other reason(s)" if len(reasons) > 1 else "")
    shown = ", ".join(name(row) for row in rows[:20]) + (f", ... ({len(rows) - 20} more)" if len(rows) > 20 else "")
    return f"{len(rows)} row(s) {what} ({why}): {shown}"


def row_and_line(row: int) -> str:
    """A table's row as its row number (from 1, as predictions' row column) and its line in the file."""
    return f"row {row + 1} (line {row + 2})"


def labelled_predictions(module: TrainingModule, dataset: TensorBatchDataset, rows: int | None = None
                         ) -> pd.DataFrame:
    """Predictions on a split (features, targets) with the true class or value beside each; `rows`: its first
    rows only (those a test limited by trainer.limit_test_batches covered)."""
    import pandas as pd
    import torch

    from dltrain.data.spec import REGRESSION

    batches = []

    def inputs():
        for features, targets in dataset.labelled_batches(rows):
            batches.append(targets)
            yield features

    spec, predicted = module.spec, prediction_table(module, inputs())
    targets = torch.cat(batches).cpu().numpy() if batches else np.zeros(0)
    if spec.task == REGRESSION:
        true = targets * spec.target_std + spec.target_mean
    else:
        names = spec.labels()
        true = [names[int(t)] for t in targets]
    return pd.concat([pd.DataFrame({"true": true}), predicted], axis=1)
