"""The config's schema: the type and range of every key, in one place, for the checks, `dltrain --help` and
the README's key reference alike.

- dltrain's own sections (the top level, compile, regularization, cv, and the loading keys every data preset
  shares) are the pydantic models below, each field with its meaning.
- A node with a `_target_` is checked against its callable's signature, as torchtune binds a component's
  config: the argument names, their annotated types, and the ranges the annotations carry. dltrain's models,
  losses and data sources annotate their arguments with the range types below, so a new preset of theirs is
  checked with no edit here.
- torch's and Lightning's signatures give types but not ranges (those they check only once a run is under
  way, or never): LIBRARY_RANGES states them, by the callable's class.

pydantic does the checking (strict: 1 is not true, "1" is not 1); describe() words the expected value.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from dltrain.errors import ConfigError, one_line

PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveNumber = Annotated[float, Gt(0)]
NonNegativeNumber = Annotated[float, Ge(0)]
Fraction = Annotated[float, Ge(0), Lt(1)]  # [0, 1): dropout, smoothing, momentum
Share = Annotated[float, Gt(0), Lt(1)]  # (0, 1): a part of the rows
Sizes = list[PositiveInt]  # layer widths; [] for none
NonEmptySizes = Annotated[list[PositiveInt], MinLen(1)]
ImageSize = Annotated[list[PositiveInt], MinLen(2)]  # [height, width]
Name = Annotated[str, MinLen(1)]
Norm = Literal["none", "batch", "layer"]
Task = Literal["classification", "multiclass", "binary", "regression"]  # classification: binary or multiclass, as the targets say
Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid", "gelu"]
ACTIVATION_NAMES: tuple[str, ...] = typing.get_args(Activation)
PRESET_KEYS = ("name", "fits", "inputs")  # what a preset says of itself (a model's tasks and inputs), not its callable's
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class Section(BaseModel):
    """A config section dltrain itself reads: its keys are these fields, no others."""

    model_config = ConfigDict(extra="forbid")


class Compile(Section):
    enabled: bool = Field(description="torch.compile the model for training")
    backend: Name = Field(description="a torch.compile backend: inductor, aot_eager, eager, ...")
    mode: Literal[COMPILE_MODES] = Field(description="torch.compile's mode (null: torch's default)")


class Regularization(Section):
    l1: NonNegativeNumber = Field(description="coefficient of the L1 penalty added to the training loss "
                                              "(L2 is optimizer.weight_decay)")


class CrossValidation(Section):
    folds: Union[Literal[0], Annotated[int, Ge(2)]] = Field(description="0: one run; k: k-fold cross-validation")
    all_data: bool = Field(description="true: folds over every row, no held-out test")


class Augment(Section):
    crop_padding: NonNegativeInt = Field(description="random crop back to size after padding by this many pixels")
    hflip: bool = Field(description="random horizontal flip")
    rotation: Annotated[float, Ge(0), Le(180)] = Field(description="random rotation within +- degrees")
    noise: NonNegativeNumber = Field(description="standard deviation of Gaussian noise added to the inputs")
    random_resized_crop: Union[None, Annotated[list[Annotated[float, Gt(0), Le(1)]], MinLen(2), MaxLen(2)]] = Field(
        description="random crop of [min, max] of the image's area, resized back (null: off), e.g. [0.08, 1.0]")
    color_jitter: NonNegativeNumber = Field(description="random brightness, contrast and saturation within +- "
                                                        "this share")
    policy: Literal["none", "trivial", "rand", "auto"] = Field(
        description="an augmentation policy: TrivialAugmentWide, RandAugment or AutoAugment (ImageNet's)")
    normalize: Literal["none", "imagenet"] = Field(
        description="subtract each channel's mean and divide by its std (imagenet: pretrained weights' "
                    "statistics); applied to every image read, at evaluation and prediction too")
    mixup: NonNegativeNumber = Field(description="MixUp of training batches: its Beta(alpha, alpha) (0: off)")
    cutmix: NonNegativeNumber = Field(description="CutMix of training batches: its Beta(alpha, alpha) (0: off)")


class DataLoading(Section):
    """The keys every data preset shares; the others are its source's (`data._target_`) arguments."""

    model_config = ConfigDict(extra="allow")
    batch_size: PositiveInt = Field(description="rows per training batch")
    val_fraction: Share = Field(description="share of the rows the test part leaves held out for validation, for every "
                                              "source (stratified, seeded)")
    test_fraction: Share = Field(description="share held out for the final test (unless the data fixes its own)")
    num_workers: Union[NonNegativeInt, Literal["auto"]] = Field(
        description="DataLoader worker processes (auto: 0 in memory and for streamed tables, which the training "
                    "process reads itself; streamed images, the cores shared among the ranks)")
    pin_memory: Union[bool, Literal["auto"]] = Field(description="page-locked batches for copies to a GPU")
    class_weights: Union[None, Literal["balanced"], Annotated[list[PositiveNumber], MinLen(2)]] = Field(
        description="loss weight of each class: balanced (from the training split's counts) or one per class")
    augment: Augment = Field(description="augmentation of training batches")
    stream: Union[bool, Literal["auto"]] = Field(
        description="read samples from their files while training instead of holding them in memory (auto: "
                    "when the decoded data would take more than a quarter of the available memory)")
    on_bad_sample: Literal["error", "skip"] = Field(
        description="a sample that cannot be read while streaming: error (one line naming it, exit 1) or skip "
                    "(counted in results.json)")


Target = Union[dict[str, Any], None]  # a node with a _target_, checked against its callable (check_target)


class Scheduling(Section):
    """The scheduler group: the scheduler itself, and when Lightning steps it."""

    scheduler: Target = Field(description="the learning-rate scheduler (null: a constant rate)")
    interval: Literal["epoch", "step"] = Field(description="step the scheduler every epoch or every optimizer step")
    frequency: PositiveInt = Field(description="every this many intervals")
    monitor: Name = Field(description="the metric a plateau scheduler follows")


class AutoModel(Section):
    """model=auto: the keys given here set the same key of the preset the data's kind chooses."""

    name: Literal["auto"]
    choose: dict[str, str] = Field(description="data kind -> model preset")
    dropout: Union[Fraction, None] = Field(description="dropout of the chosen model")
    activation: Union[Activation, None] = Field(description="activation of the chosen model")
    hidden_sizes: Union[Sizes, None] = Field(description="dense hidden layers of the chosen model, e.g. [128,64]")


class TrainConfig(Section):
    """The top level of train.yaml; each config group's node is checked by its own rule."""

    model_config = ConfigDict(extra="allow")
    seed: NonNegativeInt = Field(description="data splits, initial weights and shuffling")
    name: Union[None, Name] = Field(description="the run's name: ends its folder's name; in results.json, the "
                                                "loggers and dltrain-runs")
    tags: list[str] = Field(description="the run's tags: in results.json, the loggers and dltrain-runs")
    monitor: Name = Field(description="the metric early stopping and the best checkpoint "
                                                           "follow")
    mode: Literal["min", "max"] = Field(description="whether lower (min) or higher (max) monitor is better")
    calibration: Literal["auto", "temperature", "none"] = Field(
        description="after training, a classifier's probabilities by temperature scaling fitted on the validation "
                    "split (auto: classifiers only)")
    explain: bool = Field(description="after training, why the model decides: permutation importance of a "
                                      "table's columns, integrated gradients of a few test images")
    compile: Compile
    regularization: Regularization
    cv: CrossValidation
    resume: Union[str, None] = Field(description="a run directory (or last) to continue")
    verbose: bool = Field(description="the whole config and the layer table on the terminal")


class LrFinder(Section):
    """tune=lr: Lightning's Tuner.lr_find on the training split before training."""

    find: Literal["lr"] = Field(description="what the tune preset searches: the learning rate (tune=lr)")
    apply: bool = Field(description="train with the suggested learning rate (false: only plot and record it)")
    min_lr: PositiveNumber = Field(description="the smallest learning rate tried")
    max_lr: PositiveNumber = Field(description="the largest learning rate tried")
    num_training: Annotated[int, Ge(2)] = Field(description="learning rates tried, one optimizer step each")
    mode: Literal["exponential", "linear"] = Field(description="how the rate grows from step to step")
    early_stop_threshold: Union[PositiveNumber, None] = Field(
        description="stop once the loss exceeds this many times its best (null: try every rate)")


class BatchSizeFinder(Section):
    """tune=batch_size: Lightning's Tuner.scale_batch_size, bounded by the training rows and a memory cap."""

    find: Literal["batch_size"] = Field(description="what the tune preset searches: the batch size (tune=batch_size)")
    apply: bool = Field(description="train with the batch size found (false: only record it)")
    mode: Literal["power", "binsearch"] = Field(description="double until it fails (power), then halve the "
                                                            "difference (binsearch)")
    init_val: PositiveInt = Field(description="the first batch size tried")
    steps_per_trial: PositiveInt = Field(description="optimizer steps each batch size is tried for")
    max_trials: PositiveInt = Field(description="batch sizes tried at most")
    memory_share: Annotated[float, Gt(0), Le(1)] = Field(
        description="the cap: a batch's inputs take at most this share of the device's memory (the GPU's, or "
                    "the memory available on the CPU)")


TUNERS: dict[str, type[Section]] = {"lr": LrFinder, "batch_size": BatchSizeFinder}  # tune.find -> its keys


def check_tune(node: Mapping[str, Any]) -> None:
    """The tune group's keys, by what its preset finds (tune.find)."""
    find = _plain(node).get("find") if isinstance(_plain(node), Mapping) else None
    if find not in TUNERS:
        raise ConfigError(f"tune.find={find!r} is not valid: expected one of {', '.join(TUNERS)} "
                          f"(tune=lr or tune=batch_size)")
    check_section(node, TUNERS[find], "tune")


GROUPS: dict[str, type[Section]] = {"data": DataLoading, "scheduler": Scheduling}  # groups' keys dltrain reads

_OPTIMIZER = {"lr": PositiveNumber, "weight_decay": NonNegativeNumber, "momentum": Fraction}
# class (by import path) -> argument -> the range its own signature does not state. Applied to subclasses
# too; looked up only when the class's package is already imported (the target being checked imported it).
LIBRARY_RANGES: dict[str, dict[str, Any]] = {
    "torch.optim.Optimizer": _OPTIMIZER,
    "pytorch_lightning.Trainer": {
        "max_epochs": Union[Literal[-1], PositiveInt],
        "num_nodes": PositiveInt,
        "gradient_clip_val": Union[NonNegativeNumber, None],
    },
    "pytorch_lightning.callbacks.EarlyStopping": {"patience": NonNegativeInt, "min_delta": NonNegativeNumber},
    "torch.nn.CrossEntropyLoss": {"label_smoothing": Fraction},
    "torch.nn.HuberLoss": {"delta": PositiveNumber},
}


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def conforms(value: Any, annotation: Any) -> bool:
    """Whether `value` (plain Python from the YAML) is of `annotation`'s type and within its ranges."""
    try:
        adapter = _adapter(annotation)
    except Exception:  # an annotation pydantic cannot check (a forward reference, a protocol): the call will say
        return True
    for candidate in (value, _tupled(value)):  # YAML has no tuples: a list stands for one
        try:
            adapter.validate_python(candidate)
            return True
        except ValidationError:
            continue
    return False


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    if isinstance(value, dict):
        return {k: _tupled(v) for k, v in value.items()}
    return value


_BOUNDS = ((Gt, "gt", ">", "("), (Ge, "ge", ">=", "["), (Lt, "lt", "<", ")"), (Le, "le", "<=", "]"))


def _range(metadata: Iterable[Any]) -> str:
    """' > 0', ' in [0, 1)': the bounds among an annotation's metadata."""
    found = [(sign, bracket, getattr(m, attribute)) for m in metadata
             for kind, attribute, sign, bracket in _BOUNDS if isinstance(m, kind)]
    if len(found) == 2:
        (_, low_bracket, low), (_, high_bracket, high) = sorted(found, key=lambda bound: bound[1] not in "([")
        return f" in {low_bracket}{low:g}, {high:g}{high_bracket}"
    return "".join(f" {sign} {bound:g}" for sign, _, bound in found)


def describe(annotation: Any) -> str:
    """A right value of `annotation` in words: 'an integer > 0', 'a number in [0, 1)', 'relu | tanh'."""
    metadata: tuple = ()
    if typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata = tuple(extra)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join("null" if a is None else str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin in (Union, types.UnionType):
        choices, others = [], []  # literal values (true | false for a bool) read as one list of choices
        for member in args:
            if typing.get_origin(member) is Literal or member is bool:
                choices.append(describe(Literal[True, False] if member is bool else member))
            elif member is not type(None):
                others.append(describe(member))
        if type(None) in args:
            (others if others else choices).append("null")
        choices = list(dict.fromkeys(" | ".join(choices).split(" | "))) if choices else []
        return " or ".join(([" | ".join(choices)] if choices else []) + others)
    if origin in (list, tuple) or annotation in (list, tuple):
        item = describe(args[0]) if args else "values"
        items = item.replace("an integer", "integers").replace("a number", "numbers").replace("a string", "strings")
        least = next((m.min_length for m in metadata if isinstance(m, MinLen)), 0)
        return ("a non-empty list of " if least == 1 else f"a list of {least} or more " if least else "a list of ") + items
    if origin is dict or annotation is dict:
        return "a mapping"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    text = words.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if annotation is str and any(isinstance(m, MinLen) for m in metadata):
        text = "a non-empty string"
    return text + _range(metadata)


def check_value(key: str, value: Any, annotation: Any) -> None:
    """Refuse `key`=`value` in one line naming what a right value looks like."""
    if not conforms(value, annotation):
        raise ConfigError(f"{key}={value!r} is not valid: expected {describe(annotation)}")


def check_section(node: Mapping[str, Any], section: type[Section], where: str = "") -> None:
    """`node`'s keys against `section`'s fields: a key it lacks is refused (unless the section allows others),
    each value checked against its field's type and range, nested sections in turn."""
    node = _plain(node)
    hints = typing.get_type_hints(section, include_extras=True)
    fields = section.model_fields
    prefix = f"{where}." if where else ""
    if section.model_config.get("extra") == "forbid":
        for key in node:
            if key not in fields:
                _unknown(f"{prefix}{key}", str(key), list(fields), where or "the config", "a key")
    for name in fields:
        annotation = hints[name]
        if name not in node or annotation == Target:
            continue
        value = node[name]
        if isinstance(annotation, type) and issubclass(annotation, Section):
            if isinstance(value, Mapping):
                check_section(value, annotation, f"{prefix}{name}")
            else:
                raise ConfigError(f"{prefix}{name}={value!r} is not valid: expected a mapping of "
                                  f"{', '.join(annotation.model_fields)}")
        else:
            check_value(f"{prefix}{name}", value, annotation)


def _plain(node: Any) -> Any:
    """A config node as plain Python, its interpolations resolved where they can be."""
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # a resolver of a Hydra run outside one: the values as written
        return OmegaConf.to_container(node, resolve=False)


def _unknown(key: str, name: str, names: list[str], owner: str, noun: str = "an argument") -> None:
    close = difflib.get_close_matches(name, names, n=1)
    raise ConfigError(f"{key} is not {noun} of {owner}: "
                      + (f"did you mean {key.rsplit('.', 1)[0]}.{close[0]}?" if close and "." in key
                         else f"did you mean {close[0]}?" if close else
                         f"it takes {', '.join(names)}" if names else "it takes no such keys"))


def signature_types(function: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(the parameters a callable takes by keyword, their annotations with library ranges on top, whether it
    takes any keyword too)."""
    parameters = dict(inspect.signature(function).parameters)
    owner = function.__init__ if inspect.isclass(function) else function
    try:
        hints = typing.get_type_hints(owner, include_extras=True)
    except Exception:  # an annotation naming a type imported only for type checkers: those are left unchecked
        hints = {}
    hints = {name: hints[name] for name in parameters if name in hints}
    if inspect.isclass(function):
        hints |= library_ranges(function)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return parameters, hints, open_ended


def library_ranges(cls: type) -> dict[str, Any]:
    """The ranges LIBRARY_RANGES states for `cls` and its bases."""
    ranges: dict[str, Any] = {}
    for path, arguments in LIBRARY_RANGES.items():
        module, _, name = path.rpartition(".")
        if module.split(".")[0] not in sys.modules:
            continue
        base = getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name, None)
        if isinstance(base, type) and issubclass(cls, base):
            ranges |= arguments
    return ranges


def check_target(node: Mapping[str, Any] | None, what: str, ignore: Iterable[str] = (),
                 named: str | None = None) -> None:
    """A `_target_` node against its callable (`named` in messages, if given): the target imports, each key is
    an argument it takes (else the closest one is named) and each value fits the argument's type and range.
    Run before the data loads: an optimizer, built as a partial, would otherwise fail at the first step."""
    from hydra.utils import get_object

    target = (node or {}).get("_target_")
    if not target:
        return
    node = _plain(node)
    try:
        function = get_object(target)
    except Exception as exc:  # Hydra raises ImportError, AttributeError or ValueError for a bad path
        raise ConfigError(f"{what}._target_={target} cannot be imported: {one_line(exc)}") from None
    try:
        parameters, hints, open_ended = signature_types(function)
    except (TypeError, ValueError):  # a builtin without a signature: instantiate will say
        return
    skipped = set(ignore)
    for key, value in node.items():
        if str(key).startswith("_") or key in skipped:
            continue
        if key not in parameters and not open_ended:
            names = [name for name in parameters if name not in ("self", "params")]
            _unknown(f"{what}.{key}", str(key), names, named or target)
        if isinstance(value, Mapping) and "_target_" in value:  # built by instantiate before the call
            check_target(value, f"{what}.{key}")
        elif key in hints:
            check_value(f"{what}.{key}", value, hints[key])
