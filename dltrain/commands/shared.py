"""The console scripts' shared parts: key=value parsing and --help of the small commands beside `dltrain`, and
for all of them the one way an error ends a command (fail) and a quick interpreter exit."""

from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from dltrain.errors import ConfigError, one_line, user_error_in

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 1, 2


def parse_keys(argv: list[str], known: dict[str, Any], required: tuple[str, ...], positional: tuple[str, ...] = ()
               ) -> dict[str, Any]:
    """key=value arguments over the defaults in `known` (an argument without "=" sets the next `positional`
    key); unknown keys, surplus arguments and missing required ones are refused."""
    values = dict(known)
    unset = list(positional)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep and unset:
            key, value = unset.pop(0), arg
        elif not sep or key not in known:
            raise ConfigError(f"unexpected argument {arg!r}; expected key=value with keys: {', '.join(known)}")
        values[key] = value
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise ConfigError(f"{missing[0]}=... is required (keys: {', '.join(known)})")
    return values


def listed(value: str | None) -> list[str]:
    """A list argument as given on the command line: [a,b], a,b or a."""
    return [item.strip() for item in (value or "").strip("[]").split(",") if item.strip()]


def skip_final_collection() -> None:
    """Let the interpreter exit without garbage-collecting everything the command loaded.

    At exit Python runs its cycle collector over every object left: with torch, Lightning and sympy loaded
    that takes as long as a small training run (benchmarks/README.md). gc.freeze() takes them out of its reach
    (objects freed by their reference counts still are, and atexit handlers - logging, MLflow, worker pools -
    still run). Called by the console scripts as they end, when every file they wrote is closed; never
    in-process (tests), where it would keep that process's garbage for good.
    """
    gc.freeze()


def run_tool(name: str, doc: str, keys: dict[str, Any], required: tuple[str, ...], body: Callable[..., Any],
             positional: tuple[str, ...] = ()) -> None:
    """Run a command: `body(**keys)` from sys.argv's key=value arguments (see parse_keys), or its help for
    -h/--help. A user's mistake is one line and exit 1, a bug a traceback and exit 2."""
    from dltrain.collection import hold_collections

    hold_collections()  # while the command imports; the command resumes them once it has (dltrain.collection)
    argv = sys.argv[1:]
    try:
        if any(arg in ("-h", "--help") for arg in argv):
            print(tool_help(doc, keys, required))
            return
        body(**parse_keys(argv, keys, required, positional))
    except BrokenPipeError:  # the reader went away (`| head`): as Python's docs advise, no more output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        fail(name, exc, full_error=os.environ.get("HYDRA_FULL_ERROR") == "1")
    finally:
        skip_final_collection()


def fail(name: str, exc: Exception, *, full_error: bool, user: BaseException | None = None,
         message: str | None = None) -> NoReturn:
    """End command `name` on `exc`, the exception being handled, as every console script does. A user's mistake
    (`user`, else found in `exc` by type: dltrain's UserError, wrapped or not, or a full or read-only disk) is one
    line `<name>: error: <message or the error>` and exit 1, or with HYDRA_FULL_ERROR=1 (`full_error`) `exc`
    raised on with its traceback; anything else is a bug: its traceback, a line saying so, and exit 2."""
    user = user if user is not None else user_error_in(exc)
    if user is None:
        traceback.print_exc()
        print(f"{name}: internal error (a bug, not your input): please report it with the traceback above.",
              file=sys.stderr)
        sys.exit(EXIT_INTERNAL_ERROR)
    if full_error:
        raise exc
    print(f"{name}: error: {message or one_line(user)}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def tool_help(doc: str, keys: dict[str, Any], required: tuple[str, ...]) -> str:
    """A command's --help: its module docstring (usage line first), then each key, required or its default."""
    first, _, about = doc.strip().partition("\n")
    usage, _, summary = first.strip("`").partition("`")  # "`usage`: summary" or "`usage`."
    summary = summary.lstrip(":. ")
    lines = [f"usage: {usage}", *([summary[:1].upper() + summary[1:]] if summary else []), about.rstrip(), "", "keys:"]
    width = max(12, *(len(key) + 2 for key in keys))
    lines += [f"  {key:{width}}{'required' if key in required else f'default: {default}' if default else 'optional'}"
              for key, default in keys.items()]
    return "\n".join(lines)
