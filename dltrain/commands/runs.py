"""`dltrain-runs [outputs] [name=<name>] [tag=<tag>]`: the runs under a folder, newest first; `dltrain-runs <run> <run>`: two side by side.

name= and tag= keep the runs of that name or with that tag (* and ? as wildcards).

A run is a folder with a results.json (a sweep's jobs and a cross-validation count as runs, its folds do
not). Each row: when it started, its status (a `running` record whose process is gone shows as `stopped`),
its name and tags, model, data, the keys set on its command line, epochs, the best monitored value and the main
test metric; on a narrow terminal the columns that do not fit are left out, and a line says which.
Two runs compare every config key that differs, then their results. Run folders are read as data only.
"""

from __future__ import annotations

import fnmatch
import time
from pathlib import Path
from typing import Any

from dltrain.rundir.files import read_record
from dltrain.rundir.layout import RunDir
from dltrain.commands.shared import run_tool

KEYS = {"path": "outputs", "other": None, "name": None, "tag": None}
MAIN_METRICS = ("test_acc", "test_r2", "test_loss")
# The listing's columns, the first kept longest where the terminal is too narrow for all (the run's folder first).
KEPT_FIRST = ("run", "status", "test", "data", "best", "tags", "name", "epochs", "model", "started", "set")
SHOWN_HEX = 8  # a data fingerprint's first hex digits in the listing (results.json holds all 64)


def find_runs(root: Path) -> list[Path]:
    """Run folders under `root` (root itself if it is one), newest first; a run's folds are part of it."""
    from dltrain.errors import DataError

    if not root.is_dir():
        raise DataError(f"{root}: no such folder (give the outputs folder, or two run folders to compare)")
    found = {path.parent for path in root.rglob(RunDir(".").results.name)}  # root's own results.json included
    runs = [run for run in found if not any(parent in found for parent in run.parents)]
    return sorted(runs, key=_started, reverse=True)


def _started(run: Path) -> float:
    config = RunDir(run).config
    return (config if config.exists() else run).stat().st_mtime


def summary(run: Path) -> dict[str, Any]:
    """One run's row: what it was and how it went."""
    from dltrain.rundir.claim import in_use

    results = _read_dict(RunDir(run).results)
    status = results.get("status", "unreadable")
    if status == "running" and not in_use(run):
        status = "stopped"  # its process is gone (killed): dltrain resume=<run> continues it
    metrics = results.get("test") or (results.get("cv") or {}).get("mean") or {}
    main = next((name for name in MAIN_METRICS if name in metrics), next(iter(metrics), None))
    best = results.get("best_val")
    return {
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(_started(run))),
        "status": status,
        "name": str(results.get("name") or ""),
        "tags": ",".join(str(tag) for tag in results.get("tags") or []),
        "model": results.get("model", ""),
        "data": _data_cell(results),
        "set": " ".join(o for o in _overrides(run) if not o.startswith(("hydra.", "hydra/"))),
        "epochs": str(results.get("epochs_run", "")),
        "best": f"{results.get('monitor')} {best:.4f}" if isinstance(best, float) else "",
        "test": f"{main.removeprefix('test_')} {metrics[main]:.4f}" if main else "",
    }


def _data_cell(results: dict[str, Any]) -> str:
    """The data's name and its fingerprint's first digits: two runs of one name on different data differ."""
    digest = (results.get("data_fingerprint") or {}).get("sha256")
    return f"{results.get('data', '')} {digest[:SHOWN_HEX]}" if isinstance(digest, str) else str(results.get("data", ""))


def different_data(rows: list[dict[str, str]]) -> list[str]:
    """A line for each data name that the listed runs read in more than one version (fingerprint)."""
    versions: dict[str, set[str]] = {}
    for row in rows:
        name, _, digest = row["data"].partition(" ")
        if digest:
            versions.setdefault(name, set()).add(digest)
    return [f"data={name}: the runs read {len(seen)} different versions of it ({', '.join(sorted(seen))}): "
            "compare their metrics with care" for name, seen in sorted(versions.items()) if len(seen) > 1]


def _overrides(run: Path) -> list[str]:
    loaded = read_record(RunDir(run).hydra_overrides)
    return [str(o) for o in loaded] if isinstance(loaded, list) else []


def _read_dict(path: Path) -> dict[str, Any]:
    loaded = read_record(path)
    return loaded if isinstance(loaded, dict) else {}


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value}
    return flat


def differences(first: Path, second: Path) -> list[tuple[str, str, str]]:
    """(key, first's, second's) for every config key that differs, then every result of either run."""
    configs = [_flat(_read_dict(RunDir(run).config)) for run in (first, second)]
    keys = list(dict.fromkeys([*configs[0], *configs[1]]))
    rows = [(key, str(configs[0].get(key, "-")), str(configs[1].get(key, "-"))) for key in keys  # as written
            if configs[0].get(key, "-") != configs[1].get(key, "-")]
    results = [_flat(_read_dict(RunDir(run).results)) for run in (first, second)]
    figures = [key for key in dict.fromkeys([*results[0], *results[1]])
               if key.split(".")[0] in ("status", "data_fingerprint", "epochs_run", "best_val", "best_epoch",
                                        "early_stopped", "val", "test", "cv", "wall_time_s", "num_parameters")
               and not key.startswith("cv.folds")]
    return rows + [(key, _shown(results[0].get(key, "-")), _shown(results[1].get(key, "-"))) for key in figures]


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _matches(row: dict[str, str], name: str | None, tag: str | None) -> bool:
    """Whether a run's row has the name (a pattern: * and ?) and a tag (likewise) asked for."""
    return (name is None or fnmatch.fnmatchcase(row["name"], str(name))) and (
        tag is None or any(fnmatch.fnmatchcase(t, str(tag)) for t in row["tags"].split(",") if t))


def fitting_columns(rows: list[dict[str, str]], width: int, headers: dict[str, str]) -> list[str]:
    """The columns of the listing that fit `width` characters with no cell wrapped, in table order: the widest
    set kept in KEPT_FIRST's order (the run's folder always); a column no run fills is left out."""
    from rich.cells import cell_len

    filled = [c for c in rows[0] if any(row[c] for row in rows)]
    wide = {c: max(cell_len(headers.get(c, c)), *(cell_len(row[c]) for row in rows)) + 3  # padding, border
            for c in filled}
    kept, used = [], 1
    for column in (c for c in KEPT_FIRST if c in wide):
        if column == "run" or used + wide[column] <= width:
            kept.append(column)
            used += wide[column]
    return [c for c in rows[0] if c in kept]


def _shared_metric_names(rows: list[dict[str, str]]) -> dict[str, str]:
    """best and test shown as "best val_loss" and "test acc" in the header where every run's is that metric (their
    cells then hold the value alone, as `rows` is changed to), instead of the metric's name in each cell."""
    headers = {}
    for column in ("best", "test"):
        names = {row[column].split(" ")[0] for row in rows if row[column]}
        if len(names) == 1:
            headers[column] = f"{column} {names.pop()}"
            for row in rows:
                row[column] = row[column].split(" ", 1)[-1]
    return headers


def _listing(root: Path, found: list[Path], rows: list[dict[str, str]], title: str) -> None:
    """The runs' table at the terminal's width: no cell wrapped, the columns that do not fit left out and named."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    headers = _shared_metric_names(rows)
    rows = [{"run": str(run.relative_to(root)) if run != root else ".", **row} for run, row in zip(found, rows)]
    columns = fitting_columns(rows, console.width, headers)
    table = Table(title=title)
    for column in columns:
        table.add_column(headers.get(column, column), no_wrap=column != "run",
                         overflow="fold" if column == "run" else "ellipsis")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    left = [c for c in rows[0] if c not in columns and any(row[c] for row in rows)]
    if left:
        console.print(f"not shown at {console.width} columns: {', '.join(left)} (a wider terminal shows them)")
    for line in different_data(rows):
        console.print(line)


def runs(path: str = "outputs", other: str | None = None, name: str | None = None, tag: str | None = None) -> None:
    """List the runs under `path` (those of `name` and `tag`), or compare the runs `path` and `other`."""
    from rich.console import Console
    from rich.table import Table

    from dltrain.errors import DataError

    root = Path(path).expanduser()
    if other is not None:
        second = Path(other).expanduser()
        for run in (root, second):
            if not RunDir(run).results.exists():
                raise DataError(f"{run} is not a run folder (it has no results.json)")
        table = Table(title="differences (config keys, then results)")
        for column in ("key", str(root), str(second)):
            table.add_column(column, overflow="fold")
        for row in differences(root, second):
            table.add_row(*row)
        Console(highlight=False).print(table)
        digests = [(_read_dict(RunDir(run).results).get("data_fingerprint") or {}).get("sha256") for run in (root, second)]
        if all(digests) and digests[0] != digests[1]:
            print(f"the two runs read different data (fingerprints {digests[0][:SHOWN_HEX]} and "
                  f"{digests[1][:SHOWN_HEX]}): compare their metrics with care")
        return
    found = find_runs(root) if root.is_dir() or path != KEYS["path"] else []  # no outputs/ yet: no runs yet
    rows = [summary(run) for run in found]
    kept = [(run, row) for run, row in zip(found, rows) if _matches(row, name, tag)]
    asked = " ".join(f"{key}={value}" for key, value in (("name", name), ("tag", tag)) if value is not None)
    if not kept:
        print(f"no runs under {root}" + (f" with {asked} (of {len(found)})" if asked and found else ""))
        return
    title = f"{len(kept)} run(s) under {root}" + (f" with {asked}" if asked else "") + ", newest first"
    _listing(root, [run for run, _ in kept], [row for _, row in kept], title)


def main() -> None:
    run_tool("dltrain-runs", __doc__, KEYS, (), runs, positional=("path", "other"))
