"""Augmentation of training batches, built from the data config's `augment` keys with torchvision transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dltrain.data.arrays import IMAGE
from dltrain.errors import ConfigError


def build_augmentation(options: dict[str, Any] | None, kind: str, input_shape: tuple[int, ...]) -> Callable | None:
    """A function from a batch to an augmented batch, or None when every option is off."""
    from torchvision.transforms import v2

    options = options or {}
    steps = []
    if options.get("crop_padding"):
        steps.append(v2.RandomCrop(list(input_shape[1:]), padding=int(options["crop_padding"])))
    if options.get("hflip"):
        steps.append(v2.RandomHorizontalFlip())
    if options.get("rotation"):
        steps.append(v2.RandomRotation(float(options["rotation"])))
    if steps and kind != IMAGE:
        raise ConfigError(f"data.augment crop, flip and rotation apply to images, but the data is a {kind}; "
                          "only data.augment.noise applies to it")
    noise = float(options.get("noise") or 0.0)
    if not steps and not noise:
        return None
    image_transform = v2.Compose(steps) if steps else None

    def augment(batch: Tensor) -> Tensor:
        if image_transform is not None:
            # A transform draws one set of parameters per call: call it per image so each differs.
            batch = torch.stack([image_transform(image) for image in batch])
        if noise:
            batch = batch + noise * torch.randn_like(batch)
        return batch

    return augment
