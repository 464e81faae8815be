"""model_card.md: what a completed run trained, on which data, how good it is, how it was made and how to make it
again, and the checks of its export. Written from the run directory's own files (config.yaml, results.json,
test_predictions.csv, .hydra/overrides.yaml, an export's manifest and checks), so that the card says what the
files say: at the end of training, and again after each dltrain-export.
"""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from dltrain.data.fingerprint import BY_CONTENT, BY_LISTING
from dltrain.rundir.files import read_record, write_atomic
from dltrain.rundir.layout import RunDir

RESAMPLES = 1000  # bootstrap resamples of the test rows for each interval
RESAMPLED_ROWS = 100_000  # the most test rows an error's interval is resampled from (see bootstrap_intervals)


def write_model_card(run_dir: Path, export_folder: Path | None = None) -> Path:
    """Write <run>/model_card.md from the run's files; `export_folder`: an export of it (default <run>/export,
    where there is one). Returns the card's path."""
    run = RunDir(run_dir)
    results = read_record(run.results) or {}
    config = read_record(run.config) or {}
    overrides = read_record(run.hydra_overrides) or []
    hydra = read_record(run.hydra_overrides.with_name("hydra.yaml")) or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") if isinstance(hydra, dict) else None
    export = export_folder or (Path(run_dir) / "export")
    parts = [f"# Model card: {Path(run_dir).name}", "", *_trained(results, config, overrides, choices), "",
             *_data(results), "", *_quality(results, run.test_predictions), "", *_making(results, config), "",
             *_reproduce(overrides), "", *_export(export)]
    write_atomic(run.model_card, "\n".join(parts).rstrip() + "\n")
    return run.model_card


def _trained(results: dict[str, Any], config: dict[str, Any], overrides: list[str], choices: Any) -> list[str]:
    chosen = results.get("model_auto") or {}
    model = results.get("model") + (" (model=auto's choice for this data)" if chosen else "")
    keys = [o for o in overrides if not str(o).startswith("resume=")]
    lines = ["## What was trained", "",
             f"- Model: {model}, {results.get('num_parameters', 0):,} parameters "
             f"({results.get('trainable_parameters', 0):,} trainable); task: {results.get('task')}; loss: "
             f"{results.get('loss')}; seed {results.get('seed')}.",
             f"- Optimizer: {_target_name(config.get('optimizer'))}"
             f"{', lr ' + str(config['optimizer'].get('lr')) if isinstance(config.get('optimizer'), dict) else ''}; "
             f"epochs at most {results.get('max_epochs')}; batch size "
             f"{(config.get('data') or {}).get('batch_size')}.",
             f"- Keys set on the command line: {', '.join(f'`{k}`' for k in keys) if keys else 'none (the defaults)'}."]
    if isinstance(choices, dict):  # Hydra's record of the preset each config group resolved to
        chosen_presets = [f"{group}={option}" for group, option in choices.items()
                          if option is not None and not str(group).startswith("hydra/") and group != "tuning"]
        lines.append(f"- Config presets: {' '.join(f'`{p}`' for p in chosen_presets)}.")
    if chosen.get("tuned"):
        lines.append(f"- Settings of conf/tuning/{chosen.get('tuning')}.yaml: "
                     + ", ".join(f"`{k}={v}`" for k, v in chosen["tuned"].items()) + ".")
    if results.get("name") or results.get("tags"):
        lines.append(f"- Name: {results.get('name') or '-'}; tags: {', '.join(results.get('tags') or []) or '-'}.")
    return lines


def _target_name(section: Any) -> str:
    target = section.get("_target_") if isinstance(section, dict) else None
    return str(target).rpartition(".")[2] if target else "-"


def _data(results: dict[str, Any]) -> list[str]:
    rows = results.get("rows") or {}
    print_rows = " / ".join(f"{split} {rows[split]:,}" for split in ("train", "val", "test") if split in rows)
    lines = ["## Data", "", f"- Source: {results.get('data')}; rows: {print_rows or 'not recorded'}."]
    print_ = results.get("data_fingerprint") or {}
    if print_.get("sha256"):
        if print_.get("of") in (BY_CONTENT, BY_LISTING):
            what = (f"{print_.get('files'):,} file(s), {print_.get('bytes'):,} bytes: "
                    + ", ".join(f"`{p}`" for p in print_.get("paths") or []))
            if print_["of"] == BY_LISTING:
                what += (" (their names, sizes and modification times: data this large is not read whole before "
                         "training to fingerprint it)")
        else:
            what = f"the loaded arrays of the embedded set {print_.get('set')} ({print_.get('provider')})"
        lines.append(f"- Fingerprint: SHA-256 `{print_['sha256']}` of {what}.")
    else:
        lines.append(f"- Fingerprint: none ({print_.get('why', 'not recorded by this run')}).")
    dropped = results.get("dropped_rows") or results.get("skipped")
    if dropped:
        lines.append(f"- Rows and columns the source left out: see results.json (`{json.dumps(dropped)[:200]}`).")
    return lines


def _quality(results: dict[str, Any], predictions: Path) -> list[str]:
    test = results.get("test") or {}
    scores = _row_scores(predictions, results.get("task"))
    intervals = _intervals(scores)
    lines = ["## How good", "", f"Test metrics on the test split ({(results.get('rows') or {}).get('test', '?')} "
             f"rows), with a 95% interval from {RESAMPLES} bootstrap resamples of test_predictions.csv where it "
             f"has one{_approximated(scores)}:", "", "| metric | value | 95% interval |", "|---|---|---|"]
    values = {name: float(value) for name, value in test.items()} | {
        name: point for name, (point, _, _) in intervals.items() if name not in test}
    for name, value in sorted(values.items()):
        bounds = intervals.get(name)
        lines.append(f"| {name} | {value:.4f} | {f'{bounds[1]:.4f} - {bounds[2]:.4f}' if bounds else ''} |")
    best, stopped = results.get("best_epoch"), results.get("early_stopped")
    lines += ["", f"- Best epoch: {best} of {results.get('epochs_run')} run"
                  f"{'; stopped early: ' + str(results.get('stop_reason')) if stopped else ''}; tested: "
                  f"{results.get('tested')}."]
    calibration = results.get("calibration")
    if isinstance(calibration, dict) and calibration.get("temperature") is not None:
        on_test = calibration.get("test") or {}
        lines.append(f"- Calibration: temperature {calibration['temperature']:.4f} fitted on the "
                     f"{calibration.get('fitted_on', 'validation')} split; test ECE {on_test.get('ece_before', 0):.4f}"
                     f" -> {on_test.get('ece_after', 0):.4f}, Brier {on_test.get('brier_before', 0):.4f} -> "
                     f"{on_test.get('brier_after', 0):.4f}.")
    else:
        lines.append("- Calibration: none (the probabilities are the network's own).")
    if results.get("limits"):
        lines.append(f"- Limits in force: `{json.dumps(results['limits'])}`.")
    return lines


def _approximated(scores: dict[str, np.ndarray]) -> str:
    """What the card says where an error's interval is the normal approximation (_mean_interval): a regression's
    scores over RESAMPLED_ROWS rows."""
    rows = len(scores.get("test_rmse", []))
    return f" (an error's interval, above {RESAMPLED_ROWS:,} rows: the normal approximation of its mean)" \
        if rows > RESAMPLED_ROWS else ""


def bootstrap_intervals(predictions: Path, task: str | None, seed: int = 0
                        ) -> dict[str, tuple[float, float, float]]:
    """The test metrics test_predictions.csv gives (accuracy for a classifier, RMSE and MAE for a regression),
    each as (value, low, high): its 95% percentile interval over RESAMPLES resamples of the rows (seeded: the
    same card every time).

    A resample's accuracy is its count of right rows over n, drawn from Binomial(n, accuracy): that is the
    bootstrap's own distribution, at any n. An error's mean is resampled row by row, RESAMPLES x n draws, so
    above RESAMPLED_ROWS rows its interval is the normal approximation of the mean (which the bootstrap's
    approaches at that size) instead: the card says so."""
    return _intervals(_row_scores(predictions, task), seed)


def _intervals(scores: dict[str, np.ndarray], seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """bootstrap_intervals of the rows' scores (_row_scores)."""
    rng = np.random.default_rng(seed)
    intervals = {}
    for name, values in scores.items():
        point, (low, high) = values.mean(), _mean_interval(values, name == "test_acc", rng)
        if name.endswith("rmse"):
            point, low, high = np.sqrt(point), np.sqrt(max(low, 0.0)), np.sqrt(high)
        intervals[name] = (float(point), float(low), float(high))
    return intervals


def _mean_interval(values: np.ndarray, right_or_wrong: bool, rng: np.random.Generator) -> tuple[float, float]:
    """The 95% interval of the mean of per-row values (see bootstrap_intervals)."""
    rows, mean = len(values), values.mean()
    if right_or_wrong:
        means = rng.binomial(rows, mean, size=RESAMPLES) / rows
    elif rows <= RESAMPLED_ROWS:
        chunk = max(1, 4_000_000 // rows)  # resamples at a time: their row indices stay under 32 MB
        means = np.concatenate([values[rng.integers(0, rows, size=(min(chunk, RESAMPLES - start), rows))]
                                .mean(axis=1) for start in range(0, RESAMPLES, chunk)])
    else:
        half = 1.959964 * values.std() / np.sqrt(rows)
        return mean - half, mean + half
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _row_scores(predictions: Path, task: str | None) -> dict[str, np.ndarray]:
    """Each test row's contribution to a metric: 1/0 for a right class; its squared and absolute errors."""
    if not predictions.is_file():
        return {}
    import pandas as pd

    try:
        frame = pd.read_csv(predictions, usecols=["true", "prediction"],
                            dtype={"true": str, "prediction": str} if task != "regression" else None)
    except ValueError:  # not the two columns test_predictions.csv has
        return {}
    if not len(frame):
        return {}
    if task == "regression":
        error = frame["prediction"].to_numpy(float) - frame["true"].to_numpy(float)
        return {"test_rmse": error ** 2, "test_mae": np.abs(error)}
    return {"test_acc": (frame["true"] == frame["prediction"]).to_numpy(float)}


def _making(results: dict[str, Any], config: dict[str, Any]) -> list[str]:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    device = results.get("device") or {}
    return ["## How it was made", "",
            f"- dltrain {installed('dltrain')}, torch {installed('torch')}, pytorch-lightning "
            f"{installed('pytorch-lightning')}, Python {platform.python_version()} on {platform.system()}.",
            f"- Device: {device.get('type', '?')}, {device.get('devices', '?')} device(s) on "
            f"{device.get('nodes', '?')} node(s); precision {(config.get('trainer') or {}).get('precision')}.",
            f"- Time: {results.get('wall_time_s', 0):.1f} s from start to results; status {results.get('status')}."]


def _reproduce(overrides: list[str]) -> list[str]:
    keys = [str(o) for o in overrides if not str(o).startswith("resume=")]
    command = " ".join(["dltrain", *(_quoted(k) for k in keys)])
    return ["## Reproduce", "", "The same config, from the same data (check its fingerprint), in a new run folder; "
            "with the same seed on the CPU it gives the same metrics:", "", "```bash", command, "```"]


def _quoted(override: str) -> str:
    return f"'{override}'" if any(c in override for c in " []{}'\"*$,") else override


def _export(folder: Path) -> list[str]:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return ["## Export", "", "Not exported yet (`dltrain-export ckpt_path=<this run>`)."]
    record = read_record(manifest) or {}
    lines = ["## Export", "", f"In `{folder}` (epoch {record.get('epoch')}'s weights); each file run by its own "
                              "runtime on the run's test rows:", ""]
    for name in sorted(record.get("files") or {}):
        check = read_record(folder / f"{name}.check.json") if not name.endswith(".json") else None
        if not isinstance(check, dict):
            continue
        if check.get("format") == "onnx_int8":
            lines.append(f"- `{name}` (int8): {check.get('metric')} {check.get('float')} -> {check.get('int8')} "
                         f"(a cost of {check.get('drop_points')} points, allowed {check.get('max_accuracy_drop')}); "
                         f"{check.get('size_ratio')}x the float file's size.")
        else:
            same = check.get("same_class_rows")
            lines.append(f"- `{name}` ({check.get('format')}): largest difference from the checkpoint "
                         f"{check.get('max_abs_difference', 0):.2g} on {check.get('rows')} rows"
                         f"{f', the same class on {same}' if same is not None else ''}; "
                         f"{'passed' if check.get('passed') else 'FAILED'}.")
    return lines
