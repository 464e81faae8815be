"""The small key=value commands beside `dltrain`: argument parsing and error reporting they share."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from dltrain.errors import ConfigError, UserError, one_line

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 1, 2


def parse_keys(argv: list[str], known: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """key=value arguments over the defaults in `known`; unknown keys and missing required ones are refused."""
    values = dict(known)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise ConfigError(f"unexpected argument {arg!r}; expected key=value with keys: {', '.join(known)}")
        values[key] = value
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise ConfigError(f"{missing[0]}=... is required (keys: {', '.join(known)})")
    return values


def run_tool(name: str, body: Callable[[list[str]], None]) -> None:
    """Run a command's body on sys.argv; a user's mistake is one line and exit 1, a bug a traceback and exit 2."""
    try:
        body(sys.argv[1:])
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Exception:
        traceback.print_exc()
        print(f"{name}: internal error (a bug, not your input): please report it with the traceback above.",
              file=sys.stderr)
        sys.exit(EXIT_INTERNAL_ERROR)
