"""End-to-end training in-process: every preset learns, regularization works, the run directory is complete."""

from __future__ import annotations

import pytest
import torch

from conftest import read_metrics, read_results

# (model, data) pairs where the model fits the task; sequence models read digits row by row.
PRESET_DATA = {
    "linear": "linear", "logistic": "breast_cancer", "softmax": "digits", "mlp": "digits",
    "cnn": "digits", "rnn": "digits", "lstm": "sine", "gru": "digits", "conv1d": "sine",
}
NO_EARLY_STOP = ["callbacks.early_stopping=null"]


def weight_l1(run_dir) -> float:
    """Sum of |weights| (not biases) of the model saved in the last checkpoint."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return sum(v.abs().sum().item() for k, v in state.items() if k.startswith("model.") and v.dim() > 1)


@pytest.mark.parametrize("model", list(PRESET_DATA))
def test_every_model_preset_trains_and_its_loss_falls(run, model):
    run_dir, results = run([f"model={model}", f"data={PRESET_DATA[model]}", "trainer.max_epochs=4", *NO_EARLY_STOP])
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    assert len(losses) == 4
    assert losses[-1] < 0.9 * losses[0], losses
    assert results["epochs_run"] == 4 and results["model"] == model


def optimizer_state(run_dir) -> tuple[dict, set[str]]:
    """The optimizer's hyperparameters and the state keys of its first parameter, as last.ckpt holds them."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    return state["param_groups"][0], set(state["state"].get(0, {}))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"])
def test_every_optimizer_preset_trains_with_its_own_optimizer_and_settings(run, optimizer):
    """The optimizer Lightning stepped is the preset's: its hyperparameters are the preset's values and its
    per-parameter state has the keys that torch optimizer keeps (momentum buffers, moment estimates, ...)."""
    from dltrain.config.compose import load_config

    run_dir, _ = run([f"optimizer={optimizer}", "model=mlp", "trainer.limit_train_batches=5"])
    assert all(row["train_loss"] == row["train_loss"] for row in read_metrics(run_dir))  # no NaN
    preset = {k: v for k, v in load_config([f"optimizer={optimizer}", "model=mlp"]).optimizer.items()  # with conf/tuning
              if not k.startswith("_")}
    group, keys = optimizer_state(run_dir)
    assert {key: group[key] for key in preset} == preset
    probe = torch.nn.Parameter(torch.zeros(1))
    reference = getattr(torch.optim, load_config([f"optimizer={optimizer}"]).optimizer._target_.rsplit(".", 1)[1])(
        [probe], **preset)
    probe.grad = torch.ones(1)
    reference.step()
    assert keys == set(reference.state[probe])


def test_sgd_momentum_and_nesterov_are_keys(run):
    run_dir, _ = run(["optimizer=sgd", "optimizer.momentum=0.5", "optimizer.nesterov=true", "model=mlp"])
    group, keys = optimizer_state(run_dir)
    assert (group["momentum"], group["nesterov"]) == (0.5, True) and "momentum_buffer" in keys
    run_dir, _ = run(["optimizer=sgd", "optimizer.momentum=0.0", "model=mlp", "trainer.max_epochs=1"])
    group, keys = optimizer_state(run_dir)
    assert (group["momentum"], group["nesterov"]) == (0.0, False) and "momentum_buffer" not in keys


@pytest.mark.parametrize(
    "scheduler, overrides, first_two_lrs",
    [
        ("none", [], (1e-3, 1e-3)),
        ("step", ["scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"], (1e-3, 5e-4)),
        ("cosine", [], (1e-3, 5e-4)),  # T_max = max_epochs = 2: halfway down after one epoch
        ("plateau", [], (1e-3, 1e-3)),
        ("onecycle", [], None),
    ],
)
def test_every_scheduler_preset_runs_and_sets_the_learning_rate(run, scheduler, overrides, first_two_lrs):
    run_dir, _ = run([f"scheduler={scheduler}", "model=mlp", *overrides])
    lrs = [row["lr"] for row in read_metrics(run_dir)]
    if first_two_lrs is None:  # one-cycle warms up, then anneals far below its start by the end
        assert lrs[0] != lrs[1]
    else:
        assert lrs == pytest.approx(list(first_two_lrs))


def test_early_stopping_ends_a_run_when_the_metric_stalls(run):
    # An improvement must exceed min_delta=10: none does, so the run stops after patience + 1 epochs.
    run_dir, results = run(["model=mlp", "trainer.max_epochs=20", "callbacks.early_stopping.min_delta=10",
                            "callbacks.early_stopping.patience=2"])
    assert results["early_stopped"] is True
    assert results["epochs_run"] == 3 and len(read_metrics(run_dir)) == 3


def test_early_stopping_that_fires_at_the_last_epoch_did_not_end_the_run_early(run):
    # min_delta=10, patience=2: early stopping fires after epoch 3, which trainer.max_epochs=3 ends anyway
    _, results = run(["model=mlp", "trainer.max_epochs=3", "callbacks.early_stopping.min_delta=10",
                      "callbacks.early_stopping.patience=2"])
    assert results["epochs_run"] == 3 and results["early_stopped"] is False and results["stop_reason"] is None


def test_early_stopping_is_on_by_default():
    from dltrain.config.compose import load_config

    es = load_config().callbacks.early_stopping
    assert (es.monitor, es.mode, es.patience, es.min_delta) == ("val_loss", "min", 5, 0.0)


@pytest.mark.parametrize("penalty", ["optimizer.weight_decay=0.05", "regularization.l1=0.001"])
def test_l2_and_l1_shrink_the_weights(run, penalty):
    base = ["model=mlp", "trainer.max_epochs=3", *NO_EARLY_STOP]
    plain_dir, _ = run(base)
    shrunk_dir, _ = run(base + [penalty])
    assert weight_l1(shrunk_dir) < 0.9 * weight_l1(plain_dir)


def test_gradient_clipping_bounds_every_update(run):
    """SGD moves the weights by at most lr / (1 - momentum) times the clipped gradient norm a step: with a tiny
    norm the loss stays where it started, while the unclipped run learns."""
    sgd = ["model=mlp", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9", *NO_EARLY_STOP]
    clipped_dir, _ = run([*sgd, "trainer.gradient_clip_val=1e-6"])
    plain_dir, _ = run(sgd)
    clipped = [row["train_loss"] for row in read_metrics(clipped_dir)]
    assert abs(clipped[1] - clipped[0]) < 1e-3
    assert read_metrics(plain_dir)[1]["train_loss"] < clipped[1] - 0.5


def test_a_compiled_model_trains_alike_and_keeps_its_checkpoint_keys(run):
    """compile.enabled traces the model with torch.compile (the quick eager backend here): same training,
    same state_dict keys in the checkpoints; an unknown backend is refused naming the known ones."""
    from torch._dynamo.utils import counters

    from dltrain.errors import ConfigError

    common = ["model=mlp", *NO_EARLY_STOP]
    plain_dir, plain = run(common)
    counters.clear()
    compiled_dir, compiled = run([*common, "compile.enabled=true", "compile.backend=eager"])
    assert counters["stats"]["unique_graphs"] > 0
    assert compiled["test"] == pytest.approx(plain["test"], rel=1e-5)
    keys = [list(torch.load(d / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"])
            for d in (plain_dir, compiled_dir)]
    assert keys[0] == keys[1] and not any("_orig_mod" in key for key in keys[1])
    with pytest.raises(ConfigError, match="compile.backend=nope is not a torch.compile backend here; one of .*inductor"):
        run([*common, "compile.enabled=true", "compile.backend=nope"])


def test_the_run_directory_holds_every_file_with_the_right_content(run):
    run_dir, results = run(["trainer.max_epochs=3", *NO_EARLY_STOP])
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "results.json", "model_summary.txt", "checkpoints"} <= names
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert {"train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "lr", "epoch_time_s"} <= set(rows[0])

    saved = read_results(run_dir)
    assert saved == results
    assert set(saved) >= {"test", "best_val", "epochs_run", "early_stopped", "wall_time_s", "num_parameters"}
    assert set(saved["test"]) == {"test_loss", "test_acc", "test_f1"}
    assert saved["best_val"] == pytest.approx(min(row["val_loss"] for row in rows))
    assert saved["num_parameters"] == 53002  # the CNN on 1x8x8 digits with 10 classes
    assert "CNN" in (run_dir / "model_summary.txt").read_text()
    assert "_target_: dltrain.models.cnn.CNN" in (run_dir / "config.yaml").read_text()


def test_the_best_checkpoint_loads_back_and_reproduces_the_test_metrics(run):
    import pytorch_lightning as pl

    from dltrain.checkpoints.reading import read_checkpoint

    from dltrain.training.restore import load_module
    from dltrain.config.compose import load_config
    from dltrain.data.datamodule import build_datamodule

    run_dir, results = run(["model=mlp", "trainer.max_epochs=3"])
    module = load_module(read_checkpoint(run_dir / results["best_checkpoint"]))
    cfg = load_config(["trainer=cpu"])
    datamodule = build_datamodule(module.hparams.config["data"], cfg.seed)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert tested == pytest.approx(results["test"], rel=1e-5)


def test_the_same_seed_gives_the_same_metrics(run):
    _, first = run(["model=mlp", "trainer.max_epochs=2"])
    _, second = run(["model=mlp", "trainer.max_epochs=2"])
    _, other_seed = run(["model=mlp", "trainer.max_epochs=2", "seed=7"])
    assert first["test"] == second["test"] and first["best_val"] == second["best_val"]
    assert other_seed["test"] != first["test"]


@pytest.mark.parametrize(
    "data, model, metrics",
    [("breast_cancer", "logistic", {"test_loss", "test_acc", "test_auroc"}),
     ("diabetes", "linear", {"test_loss", "test_mse", "test_mae", "test_r2"})],
)
def test_loss_and_metrics_follow_the_task(run, data, model, metrics):
    _, results = run([f"data={data}", f"model={model}", "trainer.max_epochs=3"])
    assert set(results["test"]) == metrics and results["task"] in ("binary", "regression")


def test_regression_metrics_are_in_the_targets_own_units(run):
    # Diabetes targets range over ~25..346: an untrained-ish model's MSE is in the thousands, not ~1.
    _, results = run(["data=diabetes", "model=linear", "trainer.max_epochs=1"])
    assert results["test"]["test_mse"] > 100


def test_the_epoch_loss_is_the_mean_over_samples_whatever_the_batch_sizes(run):
    """360 test rows in batches of 64 leave a last batch of 40: it must weigh 40 rows, not one batch."""
    import torch

    from dltrain.checkpoints.reading import read_checkpoint

    from dltrain.training.restore import load_module
    from dltrain.data.datamodule import build_datamodule

    run_dir, results = run(["model=softmax", "trainer.max_epochs=1"])
    module = load_module(read_checkpoint(run_dir / results["best_checkpoint"])).eval()
    config = module.hparams.config
    test_set = build_datamodule(config["data"], config["seed"]).test_set
    assert len(test_set) % config["data"]["batch_size"] != 0
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(module(test_set.features), test_set.targets).item()
    assert results["test"]["test_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("overrides, losses", [
    (["model=mlp", "trainer.max_epochs=3"], [(2.248975, 2.160180), (2.044025, 1.846919), (1.623945, 1.310666)]),
    (["model=cnn", "trainer.max_epochs=2"], [(2.278269, 2.216667), (2.115884, 1.879971)]),
])
def test_a_short_seeded_run_keeps_its_loss_curve(run, overrides, losses):
    """Pinned (train, val) losses per epoch (torch 2.x on the CPU; measured again when validation became a share
    of the rows the test part leaves and the MLP got conf/tuning/mlp_adam.yaml): a change that makes training
    faster must not change what it computes."""
    run_dir, _ = run(overrides)
    curve = [(row["train_loss"], row["val_loss"]) for row in read_metrics(run_dir)]
    assert curve == [pytest.approx(pair, abs=2e-4) for pair in losses]


def scikit_learn_score(overrides: list[str], rows=None) -> float:
    """scikit-learn's default linear model (LogisticRegression, or LinearRegression for a regression) fitted on
    the training rows dltrain's split of this config gives (`rows`: a cross-validation fold's), scored on its
    test rows (a fold's validation part with cv.all_data): accuracy or R2."""
    from omegaconf import OmegaConf
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from dltrain.config.compose import load_config
    from dltrain.data.datamodule import build_datamodule, load_data

    config = OmegaConf.to_container(load_config(overrides), resolve=True)
    data = load_data(config["data"]) if rows is not None else None
    datamodule = build_datamodule(config["data"], config["seed"], *((data, rows) if rows is not None else ()))
    train, test = datamodule.train_set, datamodule.val_set if rows is not None else datamodule.test_set
    regression = datamodule.spec.task == "regression"
    model = LinearRegression() if regression else LogisticRegression(max_iter=1000)
    model.fit(train.features.reshape(len(train), -1).numpy(), train.targets.numpy())
    return model.score(test.features.reshape(len(test), -1).numpy(), test.targets.numpy())


@pytest.mark.parametrize("data, metric", [
    ("digits", "test_acc"), ("iris", "test_acc"), ("wine", "test_acc"), ("breast_cancer", "test_acc"),
    ("diabetes", "test_r2")])
def test_every_embedded_set_trains_well_with_the_defaults_alone(tmp_path, data, metric):
    """data=<set> and nothing else (model=auto, the default optimizer, epochs and early stopping, and the
    chosen model's conf/tuning) against scikit-learn's default linear model on the same split: within 0.01 (the
    MLP on breast cancer is 0.965 against 0.974, one of its 114 test rows; 0.947 without mlp_adam's tuning)."""
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    overrides = [f"data={data}", "trainer=cpu"]
    results = train(load_config(overrides), tmp_path / "run")
    assert results["test"][metric] >= scikit_learn_score(overrides) - 0.01, results["test"]


@pytest.mark.parametrize("overrides, metric", [
    (["data=breast_cancer", "model=logistic"], "test_acc"), (["data=diabetes", "model=linear"], "test_r2")])
def test_the_readme_linear_models_reach_scikit_learns_default_on_the_same_split(tmp_path, overrides, metric):
    """The README's `dltrain data=breast_cancer model=logistic` and `data=diabetes model=linear` (with their
    conf/tuning settings) against LogisticRegression() and LinearRegression() on the same rows."""
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    results = train(load_config([*overrides, "trainer=cpu"]), tmp_path / "run")
    # 1e-6: float32's rounding of the same share of rows (breast cancer: 111 of 114 both)
    assert results["test"][metric] >= scikit_learn_score([*overrides, "trainer=cpu"]) - 1e-6, results["test"]


@pytest.mark.slow
def test_the_readme_softmax_cross_validation_on_iris_reaches_scikit_learns_default_on_the_same_folds(tmp_path):
    """`dltrain data=iris model=softmax cv.folds=10 cv.all_data=true`: its mean accuracy against
    LogisticRegression() fitted and scored on each of the same folds (above 0.9 both)."""
    import statistics

    from omegaconf import OmegaConf

    from dltrain.config.compose import load_config
    from dltrain.training.cross_validation import cross_validate
    from dltrain.data.datamodule import load_data
    from dltrain.data.folds import fold_rows

    overrides = ["data=iris", "model=softmax", "cv.folds=10", "cv.all_data=true", "trainer=cpu"]
    cfg = load_config(overrides)
    results = cross_validate(cfg, tmp_path / "run")
    folds = fold_rows(load_data(OmegaConf.to_container(cfg.data, resolve=True)), 10, cfg.seed, cfg.data.val_fraction,
                      cfg.data.test_fraction, True)
    reference = statistics.fmean(scikit_learn_score(overrides, rows) for rows in folds)
    assert results["test"]["test_acc"] >= reference > 0.9, (results["test"], reference)


def test_the_lightning_module_takes_built_parts_and_trains_under_a_plain_trainer():
    """As lightning-hydra-template's module: objects in, no config read; the record is only what it stores."""
    import functools

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from dltrain.training.module import Schedule, TrainingModule
    from dltrain.data.spec import DataSpec
    from dltrain.training.metrics import make_metrics

    torch.manual_seed(0)
    x = torch.randn(256, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    spec = DataSpec("made", "regression", (3,))
    steps = []

    def schedule(optimizer, total_steps):
        steps.append(total_steps())
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps[-1])

    module = TrainingModule(network=torch.nn.Linear(3, 1), loss=torch.nn.MSELoss(), metrics=make_metrics(spec),
                            optimizer=functools.partial(torch.optim.SGD, lr=0.05), spec=spec,
                            schedule=Schedule(schedule, interval="step"))
    assert dict(module.hparams) == {}
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(module(x)[:, 0], y)
    trainer.fit(module, loader, loader)
    assert steps == [24] and trainer.global_step == 24  # the run's optimizer steps, asked of the Trainer
    assert trainer.callback_metrics["val_loss"] < before / 4


def test_a_run_still_improving_at_its_last_epoch_says_so_and_one_that_stopped_improving_does_not(run):
    # A/B on the same run but for the learning rate: at lr=1e-9 val_loss moves by far less than min_delta
    delta = "callbacks.early_stopping.min_delta=1e-4"
    _, improving = run(["model=mlp", "trainer.max_epochs=3", delta])
    _, flat = run(["model=mlp", "trainer.max_epochs=3", delta, "optimizer.lr=1e-9"])
    assert improving["still_improving"] is True and flat["still_improving"] is False
    _, stopped = run(["model=mlp", "trainer.max_epochs=20", "callbacks.early_stopping.min_delta=10",
                      "callbacks.early_stopping.patience=2"])
    assert stopped["early_stopped"] is True and stopped["still_improving"] is False
