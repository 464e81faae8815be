"""What tells a sweep's jobs apart: the overrides that differ between them, shown as short key: value pairs
(the terminal's sweep table and the sweep's summary plot both name jobs this way)."""

from __future__ import annotations

from typing import Any


def varying_overrides(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each job's overrides without those every job shares: what tells the jobs apart."""
    shared = set.intersection(*(set(row["overrides"]) for row in rows)) if rows else set()
    return [[o for o in row["overrides"] if o not in shared] for row in rows]


def swept_values(varying: list[list[str]]) -> list[dict[str, str]]:
    """Each job's varying overrides as {key: value} to show: a key by its last part where no other swept key
    ends the same (lr for optimizer.lr), floats to four significant digits."""
    keys = list(dict.fromkeys(o.partition("=")[0] for job in varying for o in job))
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    names = {key: leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)}
    return [{names[key]: _shown(value) for key, _, value in (o.partition("=") for o in job)} for job in varying]


def _shown(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("+-").isdigit() else f"{number:.4g}"
