"""Augmentation of training batches, built from the data config's `augment` keys with torchvision transforms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dltrain.data.spec import IMAGE, TEXT
from dltrain.errors import ConfigError


def build_augmentation(options: dict[str, Any] | None, kind: str, input_shape: tuple[int, ...]) -> Callable | None:
    """A function from a batch to an augmented batch, or None when every option is off."""
    options = options or {}
    noise = float(options.get("noise") or 0.0)
    wanted = any(options.get(key) for key in ("crop_padding", "hflip", "rotation"))
    if kind == TEXT and (wanted or noise):
        raise ConfigError("data.augment changes images and numbers, and a text's inputs are token ids: leave its "
                          "keys off for text")
    image_transform = _image_transform(options, input_shape) if wanted else None
    if image_transform is not None and kind != IMAGE:
        raise ConfigError(f"data.augment crop, flip and rotation apply to images, but the data is a {kind}; "
                          "only data.augment.noise applies to it")
    if image_transform is None and not noise:
        return None

    def augment(batch: Tensor) -> Tensor:
        if image_transform is not None:
            # A transform draws one set of parameters per call: call it per image so each differs.
            batch = torch.stack([image_transform(image) for image in batch])
        if noise:
            batch = batch + noise * torch.randn_like(batch)
        return batch

    return augment


def _image_transform(options: dict[str, Any], input_shape: tuple[int, ...]) -> Callable:
    """The torchvision v2 pipeline of the image options that are on."""
    from torchvision.transforms import v2  # imported only when used: it costs startup time

    steps = []
    if options.get("crop_padding"):
        steps.append(v2.RandomCrop(list(input_shape[1:]), padding=int(options["crop_padding"])))
    if options.get("hflip"):
        steps.append(v2.RandomHorizontalFlip())
    if options.get("rotation"):
        steps.append(v2.RandomRotation(float(options["rotation"])))
    return v2.Compose(steps)
