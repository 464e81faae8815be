"""A stored data spec (a checkpoint's, a prepared folder's dltrain.json) checked before it is used: every field
of the type and range training writes, so a crafted one is refused, never built from."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dltrain.data.scaling import SequenceScaler
from dltrain.data.spec import KINDS, SEQUENCE, TASKS, TEXT, DataSpec
from dltrain.data.text import TextEncoder
from dltrain.errors import CheckpointError

_MAX_INPUT_VALUES = 2**31  # values in one input row: far beyond any model dltrain builds


def checked_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's data spec, refused unless every field has the type and range training writes."""
    def fail(field: str, expected: str) -> CheckpointError:
        return CheckpointError(f"the checkpoint's data spec has {field}={spec.get(field)!r}: expected {expected}; "
                               "refused")

    fields = {f.name for f in dataclasses.fields(DataSpec)}
    unknown = sorted(set(spec) - fields)
    if unknown or not {"name", "task", "input_shape"} <= set(spec):
        raise CheckpointError(f"the checkpoint's data spec has fields {sorted(spec)}: expected {sorted(fields)}; "
                              "refused")
    shape = spec["input_shape"]
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 3 \
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape) \
            or math.prod(shape) > _MAX_INPUT_VALUES:
        raise fail("input_shape", f"1 to 3 positive sizes of at most {_MAX_INPUT_VALUES:,} values in all")
    if spec["task"] not in TASKS:
        raise fail("task", " | ".join(TASKS))
    if spec.get("kind", "table") not in KINDS:
        raise fail("kind", " | ".join(KINDS))
    classes = spec.get("num_classes", 0)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 0:
        raise fail("num_classes", "an integer >= 0")
    for field in ("target_mean", "target_std"):
        value = spec.get(field, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise fail(field, "a finite number")
    names = spec.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise fail("class_names", "a list of strings or null")
    weights = spec.get("class_weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != classes
                                or not all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights)):
        raise fail("class_weights", "null or one finite number per class")
    if spec.get("encoder") is not None and not isinstance(spec["encoder"], dict):
        raise fail("encoder", "a mapping or null")
    if not _normalization(spec.get("normalize"), shape[0]):
        raise fail("normalize", f"null or a mapping of mean and std, {shape[0]} finite numbers each (std > 0)")
    if spec.get("kind") == TEXT:
        try:
            TextEncoder.from_dict(spec.get("encoder") or {})
        except ValueError as exc:
            raise fail("encoder", f"a text encoding ({exc})") from None
    if spec.get("kind") == SEQUENCE and spec.get("encoder") is not None:
        try:
            SequenceScaler.from_dict(spec["encoder"], shape[-1])
        except ValueError as exc:
            raise fail("encoder", f"a sequence standardization ({exc})") from None
    return spec


def _normalization(value: Any, channels: int) -> bool:
    """Whether `value` is a data spec's normalize: null, or each of `channels` channels' mean and std (> 0)."""
    if value is None:
        return True
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        return False
    numbers = [v for key in ("mean", "std") if isinstance(value[key], list) and len(value[key]) == channels
               for v in value[key] if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return len(numbers) == 2 * channels and all(s > 0 for s in value["std"])
