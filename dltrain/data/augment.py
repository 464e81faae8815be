"""Augmentation of training batches, built from the data config's `augment` keys with torchvision transforms.v2.

Per image (random crop, resized crop, flip, rotation, colour jitter, an AutoAugment-family policy): applied to
whole batches in memory (build_augmentation), or to each decoded image in the DataLoader workers of a streamed
source (random_image_steps). Per batch: MixUp and CutMix (build_mixing), which make the targets soft class
probabilities. Validation and test batches are never augmented.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dltrain.data.spec import IMAGE, MULTICLASS, TEXT
from dltrain.errors import ConfigError

IMAGE_KEYS = ("crop_padding", "hflip", "rotation", "random_resized_crop", "color_jitter")
POLICIES = {"trivial": "TrivialAugmentWide", "rand": "RandAugment", "auto": "AutoAugment"}
# per-channel mean and standard deviation of ImageNet's training images (torchvision's pretrained weights')
NORMALIZATION = {"imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}


def build_augmentation(options: dict[str, Any] | None, kind: str, input_shape: tuple[int, ...],
                       per_image: bool = True, normalize: dict[str, list[float]] | None = None) -> Callable | None:
    """A function from a batch of inputs to an augmented batch, or None when every option is off.
    `per_image=False`: a streamed source's workers already applied the per-image options. `normalize`: the
    images' normalization (the spec's), undone around the per-image steps, which work on [0, 1] values."""
    options = options or {}
    noise = float(options.get("noise") or 0.0)
    wanted = image_options_on(options)
    if kind == TEXT and (wanted or noise or mixing_on(options)):
        raise ConfigError("data.augment changes images and numbers, and a text's inputs are token ids: leave its "
                          "keys off for text")
    if wanted and kind != IMAGE:
        raise ConfigError(f"data.augment crop, flip, rotation, colour and policy apply to images, but the data is a "
                          f"{kind}; only data.augment.noise applies to it")
    image_transform = _batch_image_transform(options, input_shape) if wanted and per_image else None
    if image_transform is None and not noise:
        return None
    mean, std = ((torch.tensor(normalize[key]).reshape(-1, 1, 1) for key in ("mean", "std")) if normalize
                 else (torch.tensor(0.0), torch.tensor(1.0)))

    def augment(batch: Tensor) -> Tensor:
        if image_transform is not None:
            # A transform draws one set of parameters per call: call it per image so each differs.
            shift, scale = mean.to(batch.device), std.to(batch.device)
            batch = torch.stack([(image_transform(image * scale + shift) - shift) / scale for image in batch])
        if noise:
            batch = batch + noise * torch.randn_like(batch)
        return batch

    return augment


def image_options_on(options: dict[str, Any]) -> bool:
    """Whether any per-image option is on."""
    return any(options.get(key) for key in IMAGE_KEYS) or (options.get("policy") or "none") != "none"


def mixing_on(options: dict[str, Any] | None) -> bool:
    return bool((options or {}).get("mixup") or (options or {}).get("cutmix"))


def random_image_steps(options: dict[str, Any], size: list[int]) -> list[Callable]:
    """The torchvision v2 transforms of the per-image options that are on, in the order they apply (to a pillow
    image or a uint8 tensor of the final size)."""
    from torchvision.transforms import v2  # imported only when used: it costs startup time

    steps = []
    if options.get("random_resized_crop"):
        low, high = options["random_resized_crop"]
        if low > high:
            raise ConfigError(f"data.augment.random_resized_crop=[{low},{high}]: expected [min, max] shares of the "
                              f"area, e.g. [{high},{low}]")
        steps.append(v2.RandomResizedCrop(list(size), scale=(low, high), antialias=True))
    if options.get("crop_padding"):
        steps.append(v2.RandomCrop(list(size), padding=int(options["crop_padding"])))
    if options.get("hflip"):
        steps.append(v2.RandomHorizontalFlip())
    if options.get("rotation"):
        steps.append(v2.RandomRotation(float(options["rotation"])))
    if options.get("color_jitter"):
        strength = float(options["color_jitter"])
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    policy = options.get("policy") or "none"
    if policy != "none":
        steps.append(getattr(v2, POLICIES[policy])())
    return steps


def _batch_image_transform(options: dict[str, Any], input_shape: tuple[int, ...]) -> Callable:
    """The per-image steps for one image of a batch held in memory: float in [0, 1], taken to 8 bits and back
    around a policy (AutoAugment's operations are defined on 8-bit images)."""
    from torchvision.transforms import v2

    steps = random_image_steps(options, list(input_shape[1:]))
    if (options.get("policy") or "none") == "none":
        return v2.Compose(steps)
    policy = steps.pop()
    before = v2.Compose(steps) if steps else v2.Identity()

    def transform(image: Tensor) -> Tensor:
        image = before(image)
        return policy((image.clamp(0, 1) * 255).round().to(torch.uint8)).float() / 255

    return transform


def build_mixing(options: dict[str, Any] | None, task: str, num_classes: int, loss: str
                 ) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None:
    """MixUp and/or CutMix of a training batch (one of them, drawn per batch, when both are on): the inputs
    mixed, the targets class probabilities; None when both are off."""
    options = options or {}
    if not mixing_on(options):
        return None
    if task != MULTICLASS or loss not in ("cross_entropy", "kl_div"):
        raise ConfigError(f"data.augment.mixup and cutmix mix the classes of a multiclass task with loss="
                          f"cross_entropy or kl_div (this run: {task}, loss={loss}); set them to 0")
    from torchvision.transforms import v2

    with torch.device("cpu"):  # their Beta distributions: on the CPU even where a module is built on the meta device
        mixers = [v2.MixUp(alpha=float(options["mixup"]), num_classes=num_classes)] if options.get("mixup") else []
        if options.get("cutmix"):
            mixers.append(v2.CutMix(alpha=float(options["cutmix"]), num_classes=num_classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
