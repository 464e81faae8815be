"""Hydra's instantiate, with a user's mistake surfacing as that mistake rather than a wrapped traceback."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

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
