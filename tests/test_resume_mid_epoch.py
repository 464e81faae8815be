"""Exact resume mid-epoch: a step checkpoint holds the streamed loader's position, so a run killed after it and
resumed sees the very batches, and writes the very metrics, of the run never stopped."""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import Dataset

from conftest import dltrain_command, read_results
from dltrain.data.streaming import streamed_loader


class Numbers(Dataset):
    """Map-style: row i is the number i."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index)])


class Recorder(pl.LightningModule):
    """Learns nothing useful; records each training batch's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        self.seen.append(batch[:, 0].long().tolist())
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class CrashAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, index) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def _fit(folder: Path, crash: int | None = None, resume: Path | None = None) -> Recorder:
    torch.manual_seed(0)
    module = Recorder()
    loader = streamed_loader(Numbers(), batch_size=3, num_workers=0, pin_memory=False, shuffle=True)
    callbacks = [ModelCheckpoint(dirpath=folder, filename="last", every_n_train_steps=4, monitor=None),
                 *([CrashAt(crash)] if crash is not None else [])]
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, loader, ckpt_path=str(resume) if resume else None, weights_only=False)
    return module


def test_a_stateful_loader_resumes_mid_epoch_with_the_uninterrupted_batches(tmp_path):
    """streamed_loader's StatefulDataLoader (shuffled, map-style) under a plain Lightning Trainer: a crash after
    the step-4 checkpoint (epoch 1 of 3, 7 batches an epoch), then a resume, trains on the same batches in the
    same order to the same weights."""
    whole = _fit(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="crash"):
        _fit(tmp_path / "crashed", crash=5)
    saved = torch.load(tmp_path / "crashed" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 4 and saved["epoch"] == 0
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the loader's position is in it
    resumed = _fit(tmp_path / "resumed", resume=tmp_path / "crashed" / "last.ckpt")
    assert len(whole.seen) == 21 and resumed.seen == whole.seen[4:]
    assert torch.equal(resumed.layer.weight, whole.layer.weight)


class KillAt(pl.Callback):
    """SIGKILL this process as step `step` starts: no handler runs, nothing is saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, index) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _train(run_dir: Path, overrides: list[str], kill_at: int) -> None:
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    train(load_config(overrides), run_dir, callbacks=(KillAt(kill_at),))


def train_in_child(run_dir: Path, overrides: list[str], kill_at: int = -1) -> int:
    """Train in a forked child of this process (torch already imported); its exit code."""
    child = multiprocessing.get_context("fork").Process(target=_train, args=(run_dir, overrides, kill_at))
    child.start()
    child.join(300)
    return child.exitcode


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its wall times."""
    with (run_dir / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(handle)]


def killed_and_resumed_matches_whole(tmp_path: Path, overrides: list[str], kill_at: int) -> Path:
    """Train `overrides` whole, and again killed (SIGKILL) at the start of step `kill_at` then resumed with
    `dltrain resume=`: the same metrics.csv (but its times) and test metrics. Returns the resumed run."""
    runs = {"whole": tmp_path / "whole", "killed": tmp_path / "killed"}
    assert train_in_child(runs["whole"], overrides) == 0
    assert train_in_child(runs["killed"], overrides, kill_at) == -signal.SIGKILL
    assert read_results(runs["killed"])["status"] == "running"
    resumed = dltrain_command(f"resume={runs['killed']}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"up to step {kill_at - kill_at % 4}" in resumed.stderr + resumed.stdout  # resumed mid-epoch
    assert metrics_rows(runs["killed"]) == metrics_rows(runs["whole"])
    assert read_results(runs["killed"])["test"] == read_results(runs["whole"])["test"]
    return runs["killed"]


@pytest.mark.slow
def test_a_streaming_run_killed_mid_epoch_resumes_to_the_same_metrics(tmp_path):
    """data=streaming (LitData's loader) with a step checkpoint every 4 steps, 7 batches an epoch: killed in its
    second epoch after the step-8 checkpoint, resumed, its metrics.csv is the uninterrupted run's."""
    from datafiles import write_table

    write_table(tmp_path / "t.csv")
    prepared = dltrain_command("data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=label",
                               f"output={tmp_path / 'prepared'}", cwd=tmp_path, script="dltrain-prepare")
    assert prepared.returncode == 0, prepared.stderr
    killed_and_resumed_matches_whole(tmp_path, [
        "trainer=cpu", "trainer.max_epochs=3", "data=streaming", f"data.path={tmp_path / 'prepared'}",
        "data.batch_size=32", "data.num_workers=0", "callbacks.last_checkpoint.every_n_train_steps=4",
        "callbacks.early_stopping=null"], kill_at=10)
