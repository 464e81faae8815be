"""A trained module's predictions as a table: the class and each class's probability, or the value; with the
true answer beside them for a labelled split. Shared by training (test_predictions.csv) and dltrain-predict."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from dltrain.data.batches import TensorBatchDataset
    from dltrain.module import TrainingModule


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


def labelled_predictions(module: TrainingModule, dataset: TensorBatchDataset, rows: int | None = None
                         ) -> pd.DataFrame:
    """Predictions on a split (features, targets) with the true class or value beside each; `rows`: its first
    rows only (those a test limited by trainer.limit_test_batches covered)."""
    import pandas as pd

    from dltrain.data.spec import REGRESSION

    spec, targets = module.spec, dataset.targets[:rows].cpu().numpy()
    if spec.task == REGRESSION:
        true = targets * spec.target_std + spec.target_mean
    else:
        names = spec.labels()
        true = [names[int(t)] for t in targets]
    return pd.concat([pd.DataFrame({"true": true}), prediction_table(module, dataset.features[:rows])], axis=1)
