"""dltrain-predict on an image folder of any size: the files listed (nothing decoded), read and transformed a
batch at a time in DataLoader workers as evaluation reads them (dltrain.data.image_stream.image_pipeline, no
augmentation), each batch predicted and its rows written as they come (dltrain.inference.prediction_file), so
memory stays that of the batches in flight. An unreadable file is a row without a prediction, its reason beside."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dltrain.data.spec import DataSpec
from dltrain.errors import DataError
from dltrain.inference.prediction_file import write_predictions


class ImageInputs(Dataset):
    """(the model's input, "") per file, or (zeros, why) for a file that cannot be read."""

    def __init__(self, files: list[str], spec: DataSpec) -> None:
        from dltrain.data.image_stream import image_pipeline

        channels, *size = spec.input_shape
        self.files, self.shape = files, tuple(spec.input_shape)
        self.transform: Callable[[Any], Tensor] = image_pipeline(size, channels, None, spec.normalize)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        from dltrain.data.images import read_rgb

        file = self.files[index]
        try:
            with read_rgb(file, file) as image:
                return self.transform(image), ""
        except DataError as exc:  # the file is named by the row's file column
            return torch.zeros(self.shape), str(exc).removeprefix(f"{file}: ")


def predict_images(module, files: list[str], target: Path, batch_size: int, num_workers: int
                   ) -> tuple[int, dict[int, str]]:
    """Write the predictions of every image of `files` to `target`, `batch_size` images at a time read by
    `num_workers` workers (none where one batch holds them all); returns the rows and the faults ({row: why})."""
    from tqdm import tqdm

    workers = num_workers if len(files) > batch_size else 0
    loader = DataLoader(ImageInputs(files, module.spec), batch_size=batch_size, num_workers=workers)

    def batches() -> Iterator[tuple[dict[str, Any], Tensor, dict[int, str]]]:
        start = 0
        for features, reasons in tqdm(loader, desc="predicting", unit=" batches", delay=2.0, leave=False):
            yield ({"file": files[start:start + len(features)]}, features,
                   {row: why for row, why in enumerate(reasons) if why})
            start += len(features)

    return write_predictions(module, batches(), target, batch_size)
