"""dltrain against hand-written PyTorch, Lightning's floor and two peers: every figure printed with its
baseline and their ratio, measured in this one command, on this machine (benchmarks/README.md holds a run's).

1. Training throughput: samples per second over the same epochs, same model, batch size and data; the MLP and
   the CNN on digits, the CNN on 60,000 generated MNIST-sized images, the MLP on a generated 200,000-row table
   and the small CNN on a streamed folder of 1,000 JPEGs read at 224x224. Against each case's baselines:
   - the bare hand-written loop (handwritten.train_epochs): what Lightning and dltrain's epoch work cost together;
   - the hand-written loop doing dltrain's epoch work (epoch loss, accuracy and F1 of both stages, a
     metrics.csv row, last and best checkpoints), for information;
   - Lightning's floor (BareModule: the same model, batches and updates in Lightning's loop with nothing else).
     Target >= 0.95 on epochs of a realistic size (the MNIST-size CNN, the table, the image folder); on digits'
     12 ms epochs it is information. The milliseconds an epoch dltrain adds over it, and what Lightning's loop
     adds over the bare one, are printed beside it. The floor runs in dltrain's environment (no NVML probe at
     every optimizer step on a machine without GPUs), so the ratio is dltrain's own cost; for the table, two more
     floors for information: with the two checkpoints every run writes, and as Lightning ships (the probe on);
   - the peers, on digits: a plain Lightning module as lightning-hydra-template writes one (peer_lightning.py),
     target >= 1.5 (in dltrain's environment; as Lightning ships, for information), and Keras 3 `fit` on the
     torch backend (peer_keras.py, where keras is installed: the `bench` extra), target >= 1.5.
   Then where dltrain's time over the floor goes, by part, for the MLP on digits.
2. Start: seconds from launching `dltrain` to its first training step, against launching a bare interpreter
   that imports torch and pytorch_lightning. Target: <= 0.5 s more. `dltrain --help`: target < 0.3 s.
3. The default run's whole process against handwritten.py's (same data, model and epochs, keeps the best
   epoch, tests it). Target: <= 1.3. Printed beside it: what each process loads before it trains (torch,
   Lightning and scikit-learn against torch, scikit-learn and the torch._dynamo that torch.optim imports),
   the floor under that ratio.
4. Scaling: epoch time and peak memory of the MLP on 10k, 100k and 1M generated rows (linear growth expected).

5. With --compile: the CNN on digits with compile.enabled=true (torch.compile, inductor), once, its compiling
   included, against the same hand-written loop: whether torch.compile pays off on this machine.

Run: python benchmarks/performance.py [--skip-scaling] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
from data_scale_images import SIZE, image_folder, model_overrides  # benchmarks/ is on sys.path: the script's own folder
from handwritten import train_epochs

HERE = Path(__file__).resolve().parent


def generated_table(path: Path, rows: int, features: int = 20, seed: int = 0) -> Path:
    """A binary classification table as arrays x, y in an .npz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    np.savez(path, x=x, y=(x[:, :3].sum(axis=1) > 0).astype(np.int64))
    return path


def generated_images(path: Path, rows: int, seed: int = 0) -> Path:
    """MNIST-sized images (rows x 1 x 28 x 28, ten classes, each class a brightness level) in an .npz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    x = rng.random((rows, 1, 28, 28), dtype=np.float32) * 0.5 + (y / 20).astype(np.float32)[:, None, None, None]
    np.savez(path, x=x, y=y)
    return path


class EpochsClock(pl.Callback):
    """Seconds from the first training epoch's start to the end of training: every epoch with its validation,
    checkpoints and metrics.csv row; not the fit's set-up, its sanity check or the final test."""

    started: float | None = None
    ended: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = self.started or time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = time.perf_counter()


def dltrain_seconds(overrides: list[str], run_dir: Path) -> float:
    """Train in this process as the command does; the seconds of its epochs (EpochsClock)."""
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    clock = EpochsClock()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's config tree and tables: not part of the report
        train(load_config(overrides), run_dir, callbacks=(clock,))
    return clock.ended - clock.started


class BareModule(pl.LightningModule):
    """Lightning's floor: a plain automatic-optimization module trained on dltrain's batches and validated
    every epoch, with nothing else: no metrics, logging, checkpoints or metrics.csv."""

    def __init__(self, model, loss_fn, batch_size: int) -> None:
        super().__init__()
        self.model, self.loss_fn, self.batch_size = model, loss_fn, batch_size

    def training_step(self, batch, batch_idx: int):
        return self.loss_fn(self.model(batch[0]).squeeze(-1), batch[1])

    def validation_step(self, batch, batch_idx: int) -> None:
        self.loss_fn(self.model(batch[0]).squeeze(-1), batch[1])

    def configure_optimizers(self):
        import torch

        return torch.optim.Adam(self.model.parameters(), lr=1e-3)


class CheckpointedBareModule(BareModule):
    """The floor with the per-epoch work the issue requires of every run: its validation loss logged for the two
    ModelCheckpoints (best.ckpt and last.ckpt at every epoch's end, conf/callbacks/default.yaml's)."""

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val_loss", self.loss_fn(self.model(batch[0]).squeeze(-1), batch[1]), on_epoch=True)


@contextlib.contextmanager
def nvml_probe(shipped: bool):
    """PYTORCH_NVML_BASED_CUDA_CHECK as dltrain leaves it, whichever side ran before: dropped on a machine without
    GPUs (dltrain.training.trainer_setup.skip_nvml_probe_without_gpus), kept where GPUs are; or (`shipped`) as
    importing Lightning sets it, torch's optimizers then probing NVML at every step, loading the library anew
    where there is none. The environment as it was afterwards."""
    import os
    from unittest import mock

    import torch

    with mock.patch.dict(os.environ):
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        if shipped or torch.cuda.device_count() > 0:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
        yield


def bare_seconds(config: dict, epochs: int, checkpoints: Path | None = None, shipped: bool = False) -> float:
    """The seconds of BareModule's epochs (EpochsClock) on the config's model and data; with `checkpoints`, of
    CheckpointedBareModule's with the config's two checkpoint callbacks, writing into that folder. The environment
    is dltrain's (no NVML probe where there is no GPU), so the ratio is dltrain's own overhead; `shipped`:
    Lightning's, as a plain script of its own runs (nvml_probe)."""
    from hydra.utils import instantiate

    from dltrain.data.datamodule import build_datamodule
    from dltrain.training.losses import build_loss
    from dltrain.models.build import build_model

    data = build_datamodule(config["data"], config["seed"])
    module = (BareModule if checkpoints is None else CheckpointedBareModule)(
        build_model(config["model"], data.spec), build_loss(None, data.spec), config["data"]["batch_size"])
    clock = EpochsClock()
    saving = [] if checkpoints is None else [instantiate(config["callbacks"][name], dirpath=str(checkpoints))
                                             for name in ("model_checkpoint", "last_checkpoint")]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                         enable_checkpointing=bool(saving), enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[*saving, clock])
    with nvml_probe(shipped):
        trainer.fit(module, datamodule=data)
    return clock.ended - clock.started


def peer_seconds(config: dict, epochs: int, root: Path, shipped: bool = False) -> float:
    """The seconds of the peer module's epochs (EpochsClock): peer_lightning.PeerModule on the same rows, in
    dltrain's environment or (`shipped`) Lightning's, as for the floor (nvml_probe)."""
    from dltrain.data.datamodule import build_datamodule
    from dltrain.models.build import build_model
    from peer_lightning import peer_trainer_and_loaders

    data = build_datamodule(config["data"], config["seed"])
    clock = EpochsClock()
    trainer, module, train, val = peer_trainer_and_loaders(
        build_model(config["model"], data.spec), data.spec.num_classes,
        (data.train_set.features, data.train_set.targets), (data.val_set.features, data.val_set.targets),
        config["data"]["batch_size"], epochs, str(root), [clock])
    with nvml_probe(shipped):
        trainer.fit(module, train, val)
    return clock.ended - clock.started


def throughput(case: "Case", tmp: Path) -> dict:
    """Samples per second of training epochs (with their validation pass) of dltrain and of each baseline the
    case has, taking turns, the best of case.tries each (this machine is shared: the best try is the one least
    disturbed)."""
    import torch
    from omegaconf import OmegaConf

    from dltrain.config.compose import load_config
    from dltrain.data.datamodule import build_datamodule
    from dltrain.training.losses import build_loss
    from dltrain.models.build import build_model
    from peer_keras import keras_available, keras_seconds

    epochs = case.epochs
    overrides = ["trainer=cpu", f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null", *case.overrides]
    config = OmegaConf.to_container(load_config(overrides), resolve=True)
    data = build_datamodule(config["data"], config["seed"])
    batch_size = config["data"]["batch_size"]
    sides = {"dltrain": lambda i: dltrain_seconds(overrides, tmp / f"{case.slug}-{i}")}
    if case.in_memory:
        train_xy = (data.train_set.features, data.train_set.targets)
        val_xy = (data.val_set.features, data.val_set.targets)

        def by_hand(records: Path | None = None) -> float:
            torch.manual_seed(config["seed"])
            model = build_model(config["model"], data.spec)
            return sum(train_epochs(model, build_loss(None, data.spec), train_xy, val_xy, epochs, batch_size,
                                    records=records))
        sides["handwritten"] = lambda i: by_hand()
        sides["same_work"] = lambda i: by_hand(Path(tempfile.mkdtemp(dir=tmp)))
    if case.floor:
        sides["bare"] = lambda i: bare_seconds(config, epochs)
    if case.floor_detail:
        sides["floor_checkpoints"] = lambda i: bare_seconds(config, epochs, checkpoints=tmp / f"{case.slug}-{i}-floor")
        sides["floor_shipped"] = lambda i: bare_seconds(config, epochs, shipped=True)
    if case.peers:
        sides["peer"] = lambda i: peer_seconds(config, epochs, tmp / f"{case.slug}-{i}-peer")
        sides["peer_shipped"] = lambda i: peer_seconds(config, epochs, tmp / f"{case.slug}-{i}-shipped", shipped=True)
        if keras_available():
            sides["keras"] = lambda i: keras_seconds(config["model"]["name"], train_xy, val_xy, data.spec.num_classes,
                                                     batch_size, epochs)
    seconds = {side: [] for side in sides}
    for i in range(case.tries):
        for side, run in sides.items():
            # Each side starts as a process of its own would: with no other run's objects for Python's garbage
            # collector to walk (the earlier cases' and sides' leftovers made whoever allocated more per epoch
            # pay for full collections over them; the console script freezes its start, dltrain.collection).
            gc.collect()
            gc.freeze()
            seconds[side].append(run(i))
    rows = len(data.train_set)
    return {"rows": rows, "steps": -(-rows // batch_size)} | {
        side: rows * epochs / min(seconds.get(side) or [float("nan")]) for side in
        ("dltrain", "handwritten", "bare", "same_work", "peer", "keras", "floor_checkpoints", "floor_shipped",
         "peer_shipped")}


def epoch_breakdown(overrides: list[str], epochs: int, tmp: Path) -> dict[str, float]:
    """Milliseconds an epoch of dltrain's own work, by part: one more run with each part timed (apart from the
    throughput runs, so that the timing does not slow them)."""
    from unittest import mock

    import torchmetrics

    from dltrain.training.callbacks import EpochMetricsCSV
    from dltrain.training.module import TrainingModule

    parts = {"checkpoint files (Trainer.save_checkpoint)": (pl.Trainer, "save_checkpoint"),
             "Lightning's self.log of the epoch values": (pl.LightningModule, "log_dict"),
             "torchmetrics update (one per 32,768 rows)": (TrainingModule, "_update_metrics"),
             "torchmetrics compute": (torchmetrics.MetricCollection, "compute"),
             "torchmetrics reset": (torchmetrics.MetricCollection, "reset"),
             "metrics.csv row and log line": (EpochMetricsCSV, "on_train_epoch_end")}
    spent = dict.fromkeys(parts, 0.0)

    def timed(name: str, original):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return call

    with contextlib.ExitStack() as stack:
        for name, (owner, attribute) in parts.items():
            stack.enter_context(mock.patch.object(owner, attribute, timed(name, getattr(owner, attribute))))
        dltrain_seconds(["trainer=cpu", f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null", *overrides],
                        tmp / "breakdown")
    return {name: seconds / epochs * 1000 for name, seconds in spent.items()}


def launch_seconds(code: str, *args: str, cwd: Path) -> float:
    """Seconds from launching `python -c code` until it prints a number (seconds since the launch) and exits."""
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code, repr(started), *args], cwd=cwd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("SECONDS ")]
    if not lines:
        sys.exit(f"no time printed:\n{out.stderr[-2000:]}")
    return float(lines[-1].split()[1])


def importing(modules: str) -> str:
    """Code for launch_seconds that imports `modules` and prints the seconds since its launch."""
    return f'import sys, time\nimport {modules}\nprint(f"SECONDS {{time.time() - float(sys.argv[1])}}")\n'


IMPORTS = importing("torch, pytorch_lightning")
# What handwritten.py loads before its first update: torch, scikit-learn, and torch._dynamo, which torch.optim
# imports when the first optimizer is made. The floor of the default run's baseline process.
HAND_IMPORTS = importing("torch, sklearn.datasets, sklearn.model_selection, torch._dynamo")
# The same for the default run's dltrain process: torch, Lightning (torchmetrics, torchvision), scikit-learn.
RUN_IMPORTS = importing("torch, pytorch_lightning, sklearn.datasets, sklearn.model_selection")

# `dltrain trainer=cpu` itself, with a callback that reports the first training step and ends the process there.
FIRST_STEP = """
import os, sys, time
started = float(sys.argv[1])
from dltrain.collection import hold_collections
hold_collections()  # console_main's first step, taken before the imports this script adds for its callback
from dltrain.commands import train as cli
import dltrain.training.train, pytorch_lightning as pl
class FirstStep(pl.Callback):
    def on_train_batch_start(self, *args):
        print(f"SECONDS {time.time() - started}", flush=True)
        os._exit(0)
train_module = dltrain.training.train
build_callbacks = train_module.build_callbacks
train_module.build_callbacks = lambda cfg, run_dir, added: build_callbacks(cfg, run_dir, added + [FirstStep()])
sys.argv = ["dltrain", *sys.argv[2:]]
cli.console_main()  # the console script `dltrain` runs
"""


def timed(command: list[str], cwd: Path, code: int = 0) -> float:
    """Seconds `command` takes, which must end with exit code `code`."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != code:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}, not {code}:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


# A new user's mistakes, each answered with one line (against `python -c pass`).
MISTAKES = [("missing data file", ["dltrain", "data=csv", "data.path=missing.csv", "data.target=y"]),
            ("misspelt key", ["dltrain", "optimizer.lrr=0.1"]),
            ("missing checkpoint (dltrain-eval)", ["dltrain-eval", "ckpt_path=missing.ckpt"])]


SCALING = """
import csv, json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {here!r})
from performance import dltrain_seconds, generated_table
import dltrain.training.train
with tempfile.TemporaryDirectory() as tmp:
    path = generated_table(Path(tmp) / "table.npz", {rows})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = dltrain_seconds(["trainer=cpu", "trainer.max_epochs=2", "callbacks.early_stopping=null",
                                     "data=arrays", f"data.path={{path}}", "model=mlp", "data.batch_size=256"],
                                    Path(tmp) / "run")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"epoch_s": seconds / 2, "peak_mb": peak / 1024, "above_imports_mb": (peak - base) / 1024}}))
"""


def scaling(rows: int) -> dict:
    """Epoch time and peak memory of one table size, in a process of its own (so peaks do not mix)."""
    out = subprocess.run([sys.executable, "-c", SCALING.format(here=str(HERE), rows=rows)],
                         capture_output=True, text=True, check=True)
    return {"rows": rows} | json.loads(out.stdout.splitlines()[-1])


class Case(NamedTuple):
    """A throughput case: its overrides and epochs; whether it is one of the issue's targets (or shown for
    comparison), gets the floor and peer lines, how many tries each side has, and its targets."""

    name: str
    overrides: list[str]
    epochs: int
    target: bool = True
    floor: bool = False
    tries: int = 3
    floor_target: float | None = 0.95  # dltrain's least share of the floor's throughput (None: information)
    peers: bool = False  # the plain Lightning module and Keras 3 beside it (target PEER_TARGET)
    in_memory: bool = True  # the hand-written loops need the rows as tensors; a streamed case has the floor only
    floor_detail: bool = False  # two more floors, for information: with the two checkpoints, and as Lightning ships

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower())


PEER_TARGET = 1.5  # dltrain's least multiple of each peer's throughput, on digits


def figures_line(label: str, ours: float, theirs: float, unit: str) -> str:
    """A row of the report: dltrain's figure, the hand-written one, their ratio and the unit."""
    return f"{label:38}{ours:12.2f}{theirs:14.2f}{ours / theirs:8.2f}  {unit:10}"


def ratio_line(label: str, ours: float, theirs: float, unit: str, target: str, passed: bool) -> str:
    return f"{figures_line(label, ours, theirs, unit)}{target:>10} {'PASS' if passed else 'FAIL'}"


def report_throughput(case: Case, row: dict) -> None:
    """The case's lines: against the bare hand-written loop (what dltrain and Lightning cost together), against
    the hand-written loop doing dltrain's epoch work, against Lightning's floor, and against the peers."""
    known = lambda side: row[side] == row[side]  # noqa: E731 - NaN: the case has no such baseline
    if known("handwritten"):
        print(figures_line(f"throughput: {case.name}", row["dltrain"], row["handwritten"], "samples/s")
              + "(vs the bare loop, which does none of the epoch work)")
    else:
        print(f"throughput: {case.name:26}{row['dltrain']:12.2f}{'':24}samples/s (streamed: no hand-written loop)")
    if known("same_work"):
        print(figures_line("  by hand, with dltrain's epoch work", row["same_work"], row["handwritten"], "samples/s")
              + "(its metrics, metrics.csv row and two checkpoints every epoch)")
        print(figures_line("  dltrain vs by hand with the same work", row["dltrain"], row["same_work"], "samples/s"))
    if known("bare"):
        if known("handwritten"):
            print(figures_line("  floor: Lightning loop, nothing else", row["bare"], row["handwritten"], "samples/s"))
        line = ("  dltrain vs the floor", row["dltrain"], row["bare"], "samples/s")
        target = case.floor_target
        print(ratio_line(*line, f">= {target}", row["dltrain"] >= target * row["bare"]) if target and case.target
              else figures_line(*line) + "(information: digits' epochs are 12 ms)")
        added = row["rows"] * (1 / row["dltrain"] - 1 / row["bare"]) * 1000
        lightning = row["rows"] * (1 / row["bare"] - 1 / row["handwritten"]) * 1000
        print(f"  {'':36}dltrain adds {added:.1f} ms an epoch over the floor" + (
            f"; Lightning's own loop {lightning:.1f} ms over the bare loop ({lightning / row['steps'] * 1000:.0f} us a "
            "step)" if known("handwritten") else ""))
    if known("floor_checkpoints"):
        print(figures_line("  dltrain vs floor + 2 checkpoints", row["dltrain"], row["floor_checkpoints"],
                           "samples/s") + "(information: best.ckpt and last.ckpt every epoch, as the issue requires)")
    if known("floor_shipped"):
        print(figures_line("  dltrain vs floor as Lightning ships", row["dltrain"], row["floor_shipped"],
                           "samples/s") + "(information: its process probes NVML at every optimizer step here)")
    if known("peer"):
        print(ratio_line("  dltrain vs a plain Lightning module", row["dltrain"], row["peer"], "samples/s",
                         f">= {PEER_TARGET}", row["dltrain"] >= PEER_TARGET * row["peer"]) + " (peer_lightning.py)")
    if known("peer_shipped"):
        print(figures_line("  dltrain vs it as Lightning ships", row["dltrain"], row["peer_shipped"], "samples/s")
              + "(information: its process probes NVML at every optimizer step here)")
    if known("keras"):
        print(ratio_line("  dltrain vs Keras 3 fit (torch backend)", row["dltrain"], row["keras"], "samples/s",
                         f">= {PEER_TARGET}", row["dltrain"] >= PEER_TARGET * row["keras"]) + " (peer_keras.py)")
    elif case.peers:
        print("  Keras 3 is not installed here (pip install '.[bench]'): its line is left out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-scaling", action="store_true", help="leave out the 10k/100k/1M table runs")
    parser.add_argument("--compile", action="store_true", help="add the CNN with torch.compile (a minute or more)")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'':38}{'dltrain':>12}{'hand-written':>14}{'ratio':>8}  {'unit':10}{'target':>10}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        table = generated_table(tmp / "table200k.npz", 200_000)
        mnist = generated_images(tmp / "images60k.npz", 60_000)
        images = image_folder(1000)
        cases = [Case("MLP, digits", ["model=mlp"], 20, floor=True, floor_target=None, peers=True),
                 Case("CNN, digits", ["model=cnn"], 20, floor=True, floor_target=None, peers=True),
                 Case("CNN, 60k x 1x28x28 (MNIST size)", ["data=arrays", f"data.path={mnist}", "model=cnn",
                                                         "data.batch_size=128"], 2, floor=True, tries=2),
                 Case("MLP, 200k x 20 table", ["data=arrays", f"data.path={table}", "model=mlp", "data.batch_size=256"],
                      3, floor=True, tries=2, floor_detail=True),
                 Case("small CNN, 1,000 JPEGs streamed", ["data=image_folder", f"data.path={images}",
                                                          f"data.image_size=[{SIZE},{SIZE}]", "data.stream=true",
                                                          "data.num_workers=2", "data.batch_size=32",
                                                          *model_overrides("cnn")], 2, floor=True, tries=3,
                      in_memory=False)]
        if args.compile:  # once: its compiling is part of what is measured
            cases.append(Case("CNN, digits, compiled", ["model=cnn", "compile.enabled=true"], 20, tries=1, target=False))
        rows = {}
        for case in cases:
            rows[case.name] = throughput(case, tmp)
            report_throughput(case, rows[case.name])
        mlp = rows["MLP, digits"]
        added = mlp["rows"] * (1 / mlp["dltrain"] - 1 / mlp["bare"]) * 1000
        print(f"\nwhere the {added:.1f} ms an epoch that dltrain adds over the floor go, MLP on digits (one more run, "
              "timed by part):")
        parts = epoch_breakdown(["model=mlp"], 20, tmp)
        for part, ms in parts.items():
            print(f"  {part:60}{ms:8.2f} ms")
        print(f"  {'the rest: callbacks called at every batch, the step bookkeeping':60}{added - sum(parts.values()):8.2f} ms")

        imports, first = (min(pair) for pair in zip(*[
            (launch_seconds(IMPORTS, cwd=tmp), launch_seconds(FIRST_STEP, "trainer=cpu", cwd=tmp)) for _ in range(5)]))
        print(f"{'start: launch to first step':38}{first:12.2f}{imports:14.2f}{first - imports:+8.2f}  "
              f"{'s (diff)':10}{'<= +0.5':>10} {'PASS' if first - imports <= 0.5 else 'FAIL'}")
        dltrain = [str(Path(sys.executable).with_name("dltrain"))]
        help_s = min(timed(dltrain + ["--help"], tmp) for _ in range(3))
        bare = min(timed([sys.executable, "-c", "pass"], tmp) for _ in range(3))
        print(f"{'dltrain --help (bare python)':38}{help_s:12.2f}{bare:14.2f}{'':8}  {'s':10}{'< 0.3 s':>10} "
              f"{'PASS' if help_s < 0.3 else 'FAIL'}")
        for label, command in MISTAKES:  # each answered in one line, exit 1, before torch is imported
            script = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
            seconds = min(timed(script, tmp, code=1) for _ in range(3))
            print(f"{'mistake: ' + label:38}{seconds:12.2f}{bare:14.2f}{'':8}  {'s':10}{'< 1 s':>10} "
                  f"{'PASS' if seconds < 1 else 'FAIL'}")

        ours = [timed(dltrain + ["trainer=cpu"], tmp)]
        records = (json.loads(path.read_text()) for path in tmp.glob("outputs/runs/*/results.json"))
        results = next(r for r in records if r.get("status") == "completed")  # the start runs stop at step one
        baseline = [sys.executable, str(HERE / "handwritten.py"), str(results["epochs_run"])]
        theirs = [timed(baseline, tmp)]
        for _ in range(4):  # best of five each, taking turns (the whole process varies most)
            ours.append(timed(dltrain + ["trainer=cpu"], tmp))
            theirs.append(timed(baseline, tmp))
        print(ratio_line(f"default run, {results['epochs_run']} epochs, whole", min(ours), min(theirs), "s", "<= 1.3",
                         min(ours) <= 1.3 * min(theirs)))
        print(f"{'default run test accuracy':38}{results['test']['test_acc']:12.4f}")
        lightning, hand = (min(pair) for pair in zip(*[
            (launch_seconds(RUN_IMPORTS, cwd=tmp), launch_seconds(HAND_IMPORTS, cwd=tmp)) for _ in range(3)]))
        print(figures_line("  of which imports alone", lightning, hand, "s")
              + "(torch+Lightning+scikit-learn vs torch+scikit-learn+torch._dynamo)")

    if not args.skip_scaling:
        print(f"\n{'table rows':>12}{'epoch (s)':>12}{'s per 100k rows':>17}{'peak RSS (MB)':>15}{'above imports':>15}")
        for rows in (10_000, 100_000, 1_000_000):
            row = scaling(rows)
            print(f"{rows:>12,}{row['epoch_s']:12.3f}{row['epoch_s'] / rows * 1e5:17.3f}{row['peak_mb']:15.0f}"
                  f"{row['above_imports_mb']:15.0f}")


if __name__ == "__main__":
    main()
