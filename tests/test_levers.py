"""Each speed lever changes no result: the same seeded run trained with and without it gives the same
per-epoch losses and metrics (an A/B comparison, not pinned numbers, so it holds across torch releases)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler
from torch.utils.data.dataloader import default_collate

import dltrain.data.datamodule as datamodule
import dltrain.training.train
from conftest import read_metrics
from dltrain.data.batches import TensorBatchDataset
from dltrain.training.module import _Pending

RUN = ["model=mlp", "trainer.max_epochs=3", "data.batch_size=50"]  # 50: the last batch of each split is short
CURVES = ("train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "lr")


def without_tensor_batches(monkeypatch) -> None:
    """Batches as a DataLoader over a TensorDataset makes them: torch's BatchSampler, one row at a time,
    stacked by default_collate."""
    monkeypatch.setattr(datamodule, "TensorBatchSampler", BatchSampler)
    monkeypatch.setattr(datamodule, "keep_batch", default_collate)
    monkeypatch.delattr(TensorBatchDataset, "__getitems__")


def without_chunked_metrics(monkeypatch) -> None:
    """torchmetrics updated at every batch, as a LightningModule usually does."""
    monkeypatch.setattr(_Pending, "CHUNK_ROWS", 1)


def without_nvml_skip(monkeypatch) -> None:
    monkeypatch.setattr(dltrain.training.train, "skip_nvml_probe_without_gpus", lambda trainer: None)


def assert_same_epochs(ours: Path, theirs: Path) -> None:
    """The two runs' metrics.csv: three epochs each, every curve the same."""
    ours, theirs = read_metrics(ours), read_metrics(theirs)
    assert len(ours) == len(theirs) == 3
    for column in CURVES:
        assert torch.allclose(torch.tensor([row[column] for row in ours]),
                              torch.tensor([row[column] for row in theirs]), rtol=1e-5, atol=1e-7), column


@pytest.fixture(scope="module")
def with_lever(tmp_path_factory):
    """The run with every lever on, trained once for the comparisons (it is the same seeded run each time)."""
    from conftest import train_run

    run_dir = tmp_path_factory.mktemp("levers") / "with"
    train_run(run_dir, RUN)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("lever_off", [without_tensor_batches, without_chunked_metrics, without_nvml_skip],
                         ids=["tensor-batches", "chunked-metrics", "nvml-skip"])
def test_a_lever_leaves_the_run_as_it_was(run, monkeypatch, lever_off, with_lever):
    with monkeypatch.context() as patched:
        lever_off(patched)
        without_lever, _ = run(RUN)
    assert_same_epochs(with_lever, without_lever)
    # the weights at the end are the same too
    last = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (with_lever,
                                                                                                  without_lever)]
    assert last[0].keys() == last[1].keys()
    assert all(torch.allclose(last[0][k], last[1][k], atol=1e-6) for k in last[0])


@pytest.mark.slow
def test_collections_held_at_the_start_leave_the_run_as_it_was(tmp_path, with_lever):
    """The console script holds Python's garbage collections while it starts (dltrain.collection); in-process
    training never does: the same seeded run both ways gives the same epochs."""
    from conftest import FAST, dltrain_command, only_run_dir

    done = dltrain_command(*FAST, *RUN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_epochs(only_run_dir(tmp_path), with_lever)
