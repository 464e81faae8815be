"""The loss group and class weights: each loss on a task it fits, refused on one it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import dltrain_command, read_metrics
from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION, DataSpec
from dltrain.errors import ConfigError, DataError

FITTING = {"mse": "linear", "mae": "linear", "huber": "linear",
           "cross_entropy": "iris", "kl_div": "iris", "bce": "breast_cancer"}
MODEL = {"linear": "linear", "iris": "softmax", "breast_cancer": "logistic"}


@pytest.mark.parametrize("loss", sorted(FITTING))
def test_each_loss_trains_on_a_task_it_fits(run, loss):
    data = FITTING[loss]
    run_dir, results = run([f"data={data}", f"model={MODEL[data]}", f"loss={loss}", "trainer.max_epochs=4"])
    assert results["status"] == "completed" and results["loss"] == loss
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("loss, task, fitting", [
    ("mse", MULTICLASS, "cross_entropy | kl_div"), ("mae", BINARY, "bce"), ("huber", MULTICLASS, "cross_entropy | kl_div"),
    ("cross_entropy", REGRESSION, "mse | mae | huber"), ("kl_div", BINARY, "bce"), ("bce", MULTICLASS, "cross_entropy | kl_div"),
])
def test_each_loss_is_refused_on_a_task_it_does_not_fit(loss, task, fitting):
    from dltrain.config.compose import load_config
    from dltrain.training.losses import build_loss
    from omegaconf import OmegaConf

    spec = DataSpec("some", task, (4,), num_classes=3 if task == MULTICLASS else 2 if task == BINARY else 0)
    loss_cfg = OmegaConf.to_container(load_config([f"loss={loss}"]).loss)
    with pytest.raises(ConfigError) as refused:
        build_loss(loss_cfg, spec)
    assert str(refused.value) == (f"loss={loss} is for {'regression' if loss in ('mse', 'mae', 'huber') else 'binary' if loss == 'bce' else 'multiclass'} "
                                  f"data, but data=some is {task}: choose loss={fitting} (or loss=auto)")


def test_a_loss_that_does_not_fit_fails_before_training_in_one_line(tmp_path):
    proc = dltrain_command("trainer=cpu", "loss=mse", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("dltrain: error: loss=mse is for regression data, but data=digits "
                                                    "is multiclass: choose loss=cross_entropy | kl_div (or loss=auto)")
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints/*.ckpt"))


def test_kl_div_on_smoothed_labels_is_label_smoothed_cross_entropy_less_the_targets_entropy():
    from dltrain.training.losses import SoftTargetKLDiv

    logits, labels = torch.randn(16, 5, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 5
    for smoothing in (0.0, 0.2):
        target = torch.full((5,), smoothing / 5)
        target[0] += 1 - smoothing
        entropy = -(target * target.log()).sum() if smoothing else 0.0
        ce = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, labels)
        assert SoftTargetKLDiv(smoothing)(logits, labels).item() == pytest.approx((ce - entropy).item(), abs=1e-5)
    soft = torch.softmax(torch.randn(16, 5), dim=-1)  # given distributions are used as they are
    expected = (soft * (soft.log() - torch.log_softmax(logits, -1))).sum(-1).mean()
    assert SoftTargetKLDiv(0.3)(logits, soft).item() == pytest.approx(expected.item(), abs=1e-5)


def test_label_smoothing_is_a_key_of_cross_entropy(run):
    _, plain = run(["data=iris", "model=softmax", "loss=cross_entropy"])
    _, smoothed = run(["data=iris", "model=softmax", "loss=cross_entropy", "loss.label_smoothing=0.3"])
    assert smoothed["test"]["test_loss"] > plain["test"]["test_loss"]  # smoothed targets cannot be matched as closely


def imbalanced(path, seed=0):
    """A generated binary table, 90% class 0 and 10% class 1: two overlapping Gaussians 1.6 standard deviations
    apart. The Bayes rule for these priors finds under a third of class 1; equal weights find about 80%."""
    rng = np.random.default_rng(seed)
    y = (rng.random(3000) < 0.1).astype(np.int64)
    x = rng.normal(size=(3000, 4)) + 0.8 * y[:, None]
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def minority_recall(run_dir) -> float:
    table = pd.read_csv(run_dir / "test_predictions.csv")
    return float((table.loc[table["true"] == 1, "prediction"] == 1).mean())


@pytest.mark.slow
def test_balanced_class_weights_raise_the_minority_recall_and_are_recorded(run, tmp_path):
    data = ["data=arrays", f"data.path={imbalanced(tmp_path / 'imbalanced.npz')}", "model=logistic",
            "optimizer.lr=0.05", "trainer.max_epochs=10", "callbacks.early_stopping=null"]
    plain_dir, plain = run(data)
    weighted_dir, weighted = run(data + ["data.class_weights=balanced"])
    assert plain["class_weights"] is None
    counts = np.bincount(np.load(tmp_path / "imbalanced.npz")["y"])
    w0, w1 = weighted["class_weights"]
    assert w1 / w0 == pytest.approx(counts[0] / counts[1], rel=0.05)  # inverse to the training counts
    assert minority_recall(weighted_dir) > minority_recall(plain_dir) + 0.3


def test_balanced_weights_follow_the_training_split_counts():
    from dltrain.data.datamodule import ArrayDataModule
    from dltrain.data.embedded import wine

    module = ArrayDataModule(wine(), class_weights="balanced", seed=3)
    counts = np.bincount(module.train_set.targets.numpy(), minlength=3)
    assert module.spec.class_weights == pytest.approx(list(counts.sum() / (3 * counts)))
    assert ArrayDataModule(wine(), class_weights=[1, 2, 3]).spec.class_weights == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match=r"data.class_weights=\[1, 2\]: expected balanced or 3 numbers, one per class"):
        ArrayDataModule(wine(), class_weights=[1, 2])


@pytest.mark.parametrize("overrides, message", [
    (["data=diabetes", "model=linear", "data.class_weights=balanced"],
     "data.class_weights is for classes, but data=diabetes is regression: drop it"),
    (["data=iris", "model=softmax", "loss=kl_div", "data.class_weights=balanced"],
     "data.class_weights works with loss=cross_entropy or loss=bce, not loss=kl_div: drop data.class_weights or change the loss"),
    (["data.class_weights=[1,-2]"], "data.class_weights=[1, -2] is not valid: expected balanced or a list of 2 or more numbers > 0 or null"),
    (["loss=huber", "loss.delta=0", "data=linear", "model=linear"], "loss.delta=0 is not valid: expected a number > 0"),
])
def test_class_weight_and_loss_mistakes_are_one_line(tmp_path, overrides, message):
    proc = dltrain_command("trainer=cpu", *overrides, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"dltrain: error: {message}"
