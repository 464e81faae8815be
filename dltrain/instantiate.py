"""Hydra's instantiate, with a user's mistake surfacing as that mistake rather than a wrapped traceback, and
the keys of a configured callable checked against its signature before anything is built."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate

from dltrain.errors import ConfigError, UserError, one_line


def build(cfg: Any, what: str, **kwargs: Any) -> Any:
    """instantiate(cfg, **kwargs); a UserError inside is re-raised as is, any other failure names `what`."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise ConfigError(f"{what} cannot be built: {one_line(cause or exc)}") from exc


def check_arguments(node: Mapping[str, Any] | None, what: str, ignore: Iterable[str] = (),
                    named: str | None = None) -> None:
    """Refuse, in one line naming the closest argument, a key of `node` that its `_target_` (`named` in the
    message, if given) does not take, and a `_target_` that cannot be imported: before the data loads, not
    when the callable is finally called (an optimizer is built as a partial and called with the parameters
    only once training starts)."""
    target = (node or {}).get("_target_")
    if not target:
        return
    try:
        function = get_object(target)
    except Exception as exc:  # Hydra raises ImportError, AttributeError or ValueError for a bad path
        raise ConfigError(f"{what}._target_={target} cannot be imported: {one_line(exc)}") from None
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature: instantiate will say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    skipped = set(ignore)
    for key in node:
        if str(key).startswith("_") or key in skipped or key in parameters:
            continue
        names = [name for name in parameters if name not in ("self", "params")]
        close = difflib.get_close_matches(str(key), names, n=1)
        raise ConfigError(f"{what}.{key} is not an argument of {named or target}: "
                          + (f"did you mean {what}.{close[0]}?" if close else
                             f"it takes {', '.join(names)}" if names else "it takes no such keys"))
