"""A trained module's predictions as a table: the class and each class's probability, or the value; with the
true answer beside them for a labelled split. Shared by training (test_predictions.csv), dltrain-predict and
dltrain-serve; new inputs are predicted row by row (predict_rows): a row that cannot be predicted is named,
never given a class with empty or NaN probabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from dltrain.data.batches import TensorBatchDataset
    from pytorch_lightning import LightningModule as TrainingModule  # dltrain.training.module.TrainingModule


def prediction_table(module: TrainingModule, features: Tensor, batch_size: int = 1024) -> pd.DataFrame:
    """A DataFrame of the module's predictions: the class and each class's probability, or the value (in
    batches of `batch_size` rows, under inference_mode)."""
    import pandas as pd
    import torch

    from dltrain.data.spec import BINARY, MULTICLASS

    spec = module.spec
    was_training = module.training
    module.eval()
    with torch.inference_mode():
        outputs = torch.cat([module(batch.to(module.device)).float().cpu() for batch in features.split(batch_size)])
    module.train(was_training)
    table = pd.DataFrame(index=range(len(outputs)))
    if spec.task == MULTICLASS:
        probabilities = torch.softmax(outputs, dim=1).numpy()
    elif spec.task == BINARY:
        positive = torch.sigmoid(outputs[:, 0]).numpy()
        probabilities = np.stack([1 - positive, positive], axis=1)
    else:
        table["prediction"] = (outputs[:, 0] * spec.target_std + spec.target_mean).numpy()
        return table
    names = spec.labels()
    table["prediction"] = [names[i] for i in probabilities.argmax(axis=1)]
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probabilities[:, i]
    return table


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

    from dltrain.data.spec import REGRESSION

    spec, parts = module.spec, []
    for features, targets in dataset.in_order(rows=rows):  # a streamed split's rows are never all held
        targets = targets.cpu().numpy()
        if spec.task == REGRESSION:
            true = targets * spec.target_std + spec.target_mean
        else:
            names = spec.labels()
            true = [names[int(t)] for t in targets]
        parts.append(pd.concat([pd.DataFrame({"true": true}), prediction_table(module, features)], axis=1))
    return pd.concat(parts, ignore_index=True)
