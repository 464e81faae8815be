"""Lightning's Trainer flags and callbacks do in dltrain what they do in Lightning.

Each case runs the real `dltrain` command (the MLP on the digits: 1,293 training rows, 21 batches of 64) and
the same flag or callback on a plain Lightning module over 20 batches, and compares optimizer steps,
checkpoint files and learning rates.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import dltrain_command, only_run_dir, read_metrics, read_results

CPU = ["trainer=cpu", "model=mlp", "callbacks.early_stopping=null"]
BATCHES = 21  # training batches an epoch: digits' 1,293 training rows in batches of 64


class Plain(pl.LightningModule):
    """A plain automatic-optimization module, as Lightning's documentation writes one."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def on_train_epoch_start(self) -> None:
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def plain_fit(tmp_path, epochs: int, callbacks=(), **flags) -> tuple[pl.Trainer, Plain]:
    """Fit Plain on BATCHES random batches of 64 with these Trainer flags; (trainer, module)."""
    torch.manual_seed(0)
    rows = TensorDataset(torch.randn(BATCHES * 64, 64), torch.randint(0, 10, (BATCHES * 64,)))
    module = Plain()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path / "plain"),
                         callbacks=list(callbacks), enable_checkpointing=bool(callbacks), **flags)
    trainer.fit(module, DataLoader(rows, batch_size=64))
    return trainer, module


def dltrain_run(tmp_path, *args: str):
    proc = dltrain_command(*CPU, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return only_run_dir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 4])
def test_accumulate_grad_batches_makes_ceil_batches_over_k_updates_an_epoch(tmp_path, k):
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=2", f"trainer.accumulate_grad_batches={k}")
    steps = [int(row["step"]) for row in read_metrics(run_dir)]
    plain, _ = plain_fit(tmp_path, 2, accumulate_grad_batches=k)
    assert steps == [math.ceil(BATCHES / k), 2 * math.ceil(BATCHES / k)] and steps[-1] == plain.global_step


@pytest.mark.slow
def test_gradient_accumulation_scheduler_changes_the_updates_from_its_epoch(tmp_path):
    from pytorch_lightning.callbacks import GradientAccumulationScheduler

    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=2",
                          "+callbacks.accumulate._target_=pytorch_lightning.callbacks.GradientAccumulationScheduler",
                          "+callbacks.accumulate.scheduling={0: 1, 1: 4}")
    plain, _ = plain_fit(tmp_path, 2, callbacks=[GradientAccumulationScheduler({0: 1, 1: 4})])
    steps = [BATCHES, BATCHES + math.ceil(BATCHES / 4)]
    assert [int(row["step"]) for row in read_metrics(run_dir)] == steps and plain.global_step == steps[-1]


@pytest.mark.slow
def test_model_checkpoint_every_n_train_steps_writes_a_file_at_exactly_those_steps(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    every = ["+callbacks.steps._target_=pytorch_lightning.callbacks.ModelCheckpoint",
             "+callbacks.steps.every_n_train_steps=7", "+callbacks.steps.save_top_k=-1",
             "+callbacks.steps.filename='{step}'"]
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=2", *every)
    plain_dir = tmp_path / "plain_checkpoints"
    plain_fit(tmp_path, 2, callbacks=[ModelCheckpoint(plain_dir, "{step}", every_n_train_steps=7, save_top_k=-1)])
    ours = sorted(p.name for p in (run_dir / "checkpoints").glob("step=*.ckpt"))
    assert ours == sorted(p.name for p in plain_dir.iterdir())
    assert ours == sorted(f"step={n}.ckpt" for n in range(7, 2 * BATCHES + 1, 7))
    assert torch.load(run_dir / "checkpoints" / "step=14.ckpt", weights_only=True)["global_step"] == 14


@pytest.mark.slow
def test_stochastic_weight_averaging_averages_and_its_swalr_schedule_is_the_lr_column(tmp_path):
    from pytorch_lightning.callbacks import StochasticWeightAveraging

    swa = {"swa_lrs": 0.01, "swa_epoch_start": 2, "annealing_epochs": 2}
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=5",
                          "+callbacks.swa._target_=pytorch_lightning.callbacks.StochasticWeightAveraging",
                          *(f"+callbacks.swa.{key}={value}" for key, value in swa.items()))
    plain_swa = StochasticWeightAveraging(**swa)
    _, plain = plain_fit(tmp_path, 5, callbacks=[plain_swa])
    assert [row["lr"] for row in read_metrics(run_dir)] == pytest.approx(plain.lrs)
    assert plain.lrs[0] == plain.lrs[1] == 1e-3 and plain.lrs[-1] == pytest.approx(0.01)  # SWALR annealed
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    averaged = next(value for key, value in state.items() if key.startswith("StochasticWeightAveraging"))
    assert averaged["n_averaged"] == plain_swa.state_dict()["n_averaged"] > 1  # the same epochs averaged


@pytest.mark.slow
def test_learning_rate_monitor_needs_a_logger_as_in_lightning_and_logs_to_it(tmp_path):
    monitor = "+callbacks.lr._target_=pytorch_lightning.callbacks.LearningRateMonitor"
    refused = dltrain_command(*CPU, "trainer.max_epochs=1", monitor, cwd=tmp_path)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert last == ("dltrain: error: Lightning refuses this set-up: Cannot use `LearningRateMonitor` callback with "
                    "`Trainer` that has no logger.")
    (tmp_path / "logged").mkdir()
    run_dir = dltrain_run(tmp_path / "logged", "trainer.max_epochs=1", "logger=tensorboard", monitor)
    events = b"".join(p.read_bytes() for p in run_dir.rglob("events.out.tfevents.*"))
    assert b"lr-Adam" in events


def test_timer_stops_training_as_in_lightning(tmp_path):
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=30",
                          "+callbacks.timer._target_=pytorch_lightning.callbacks.Timer",
                          "+callbacks.timer.duration='00:00:00:00'")
    results = read_results(run_dir)
    assert results["status"] == "completed" and results["epochs_run"] < 30


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "profiler", "default"])
def test_every_debug_preset_is_a_smoke_run_leaving_a_complete_run_directory(tmp_path, preset):
    proc = dltrain_command(f"debug={preset}", "model=mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    assert results["status"] == "completed" and set(results["test"]) == {"test_loss", "test_acc", "test_f1"}
    for name in ("config.yaml", "metrics.csv", "model_summary.txt", "test_predictions.csv", "curves.png"):
        assert (run_dir / name).stat().st_size > 0
    if preset == "fdr":  # Lightning writes no checkpoint in a fast_dev_run: the final weights are tested
        assert not (run_dir / "checkpoints").exists() and results["best_checkpoint"] is None
        assert results["tested"] == "final weights (no best checkpoint was written: fast_dev_run)"
        assert [int(row["step"]) for row in read_metrics(run_dir)] == [1]
    else:
        assert results["tested"] == "best checkpoint" and (run_dir / "checkpoints" / "best.ckpt").is_file()
    if preset == "limit":
        assert [int(row["step"]) for row in read_metrics(run_dir)] == [3, 6, 9]
    if preset == "profiler":
        assert "run_training_epoch" in (run_dir / "fit-profile.txt").read_text()


def test_a_trainer_key_lightning_does_not_take_is_named_with_the_closest_before_data_loads(tmp_path):
    proc = dltrain_command(*CPU, "+trainer.max_epoch=3", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "trainer.max_epoch is not an argument of Lightning's Trainer: did you mean trainer.max_epochs?" in proc.stderr
    ok = dltrain_command(*CPU, "trainer.max_epochs=1", "+trainer.enable_autolog_hparams=false", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_a_trainer_key_dltrain_sets_itself_is_refused_naming_where_it_is_set(tmp_path):
    """Passed as +trainer.<key>, Hydra's instantiate would let the run's own value win without a word."""
    from omegaconf import OmegaConf

    from dltrain.errors import ConfigError
    from dltrain.training.preflight import check_trainer_keys_dltrain_sets

    proc = dltrain_command(*CPU, "+trainer.callbacks=[]", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("dltrain: error: trainer.callbacks is set by dltrain for every run: add one with "
                                  "+callbacks.<name>={_target_: ...}")
    for key, instead in [("logger", "choose logger=tensorboard or logger=mlflow"),
                         ("enable_checkpointing", "set callbacks.model_checkpoint=null callbacks.last_checkpoint=null"),
                         ("default_root_dir", "every run writes into its own directory: set hydra.run.dir"),
                         ("plugins", "dltrain installs its atomic checkpoint IO")]:
        with pytest.raises(ConfigError, match=f"^trainer.{key} is set by dltrain for every run: {re.escape(instead)}"):
            check_trainer_keys_dltrain_sets(OmegaConf.create({key: None, "max_epochs": 1}))


def test_trainer_enable_progress_bar_and_model_summary_are_lightnings_to_set(tmp_path):
    proc = dltrain_command(*CPU, "trainer.max_epochs=1", "model=softmax", "+trainer.enable_progress_bar=true",
                           "+trainer.enable_model_summary=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Epoch 1/1" not in proc.stdout and "epoch 1/1:" in proc.stderr + proc.stdout  # dltrain's bar, piped too
    assert "Trainable params" in proc.stdout + proc.stderr  # Lightning's own ModelSummary callback


def test_the_trainer_preset_lists_lightnings_common_flags_with_its_defaults():
    import inspect

    from dltrain.config.compose import load_config

    trainer = load_config([]).trainer
    defaults = inspect.signature(pl.Trainer.__init__).parameters
    listed = ["fast_dev_run", "limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches",
              "val_check_interval", "check_val_every_n_epoch", "accumulate_grad_batches", "max_steps", "max_time",
              "min_epochs", "log_every_n_steps", "num_sanity_val_steps", "deterministic", "benchmark", "profiler",
              "detect_anomaly", "gradient_clip_val"]
    # where Lightning's default is None, the value its documentation says None means
    meaning_of_none = {"limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_test_batches": 1.0,
                       "num_sanity_val_steps": 2, "log_every_n_steps": 50, "deterministic": False}
    for key in listed:
        expected = defaults[key].default
        assert trainer[key] == (meaning_of_none.get(key) if expected is None and key in meaning_of_none
                                else expected), key


@pytest.mark.slow
def test_epochs_without_validation_leave_their_validation_cells_empty_under_a_fixed_header(tmp_path):
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2")
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header == ["epoch", "step", "train_loss", "train_acc", "train_f1", "val_loss", "val_acc", "val_f1", "lr",
                      "epoch_time_s"]
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert all(len(line.split(",")) == len(header) for line in lines)
    assert [row["val_loss"] != "" for row in rows] == [False, True, False, True]
    assert all(row["train_loss"] != "" for row in rows)
    assert read_results(run_dir)["status"] == "completed"


@pytest.mark.slow
def test_an_epoch_that_max_steps_cuts_short_has_its_own_train_values_and_no_validation(tmp_path):
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=-1", "trainer.max_steps=50")
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    last = dict(zip(["epoch", "step", "train_loss", "train_acc", "train_f1", "val_loss"], rows[-1].split(",")))
    assert len(rows) == 3 and (last["step"], last["val_loss"]) == ("50", "")
    assert last["train_loss"] != rows[-2].split(",")[2]  # the ten batches of epoch 3, not epoch 2's values
    plain, _ = plain_fit(tmp_path, -1, max_steps=50)
    assert plain.global_step == 50 and plain.current_epoch == read_results(run_dir)["epochs_run"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("preset, averaging, settings, tested", [
    ("ema", "EMAWeightAveraging", [], "best checkpoint (averaged weights, EMAWeightAveraging)"),
    ("swa", "StochasticWeightAveraging", ["swa_lrs=0.01", "swa_epoch_start=2"],
     "averaged weights (StochasticWeightAveraging, epochs 2-3), saved as the best checkpoint"),
])
def test_a_weight_averaging_run_tests_the_weights_dltrain_eval_and_export_read_from_best_ckpt(
        tmp_path, preset, averaging, settings, tested):
    """A/B: results.json's test metrics against dltrain-eval's on best.ckpt (-predict and -serve read it as eval
    does), and the exported weights against best.ckpt's: the same weights, the averaged ones. Through the
    callbacks=ema and callbacks=swa presets."""
    from safetensors.torch import load_file

    target = f"pytorch_lightning.callbacks.{averaging}"
    run_dir = dltrain_run(tmp_path, "trainer.max_epochs=3", f"callbacks={preset}",
                          *(f"callbacks.{preset}.{setting}" for setting in settings))
    results = read_results(run_dir)
    assert results["tested"] == tested
    evaluated = dltrain_command(f"ckpt_path={run_dir}", f"trust={target}", cwd=tmp_path, script="dltrain-eval")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((run_dir / "eval_best.json").read_text())["metrics"]
    assert metrics == pytest.approx(results["test"], abs=1e-6)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    exported = dltrain_command(f"ckpt_path={run_dir}", f"trust={target}", "format=safetensors",
                               f"output={tmp_path / 'export'}", cwd=tmp_path, script="dltrain-export")
    assert exported.returncode == 0, exported.stderr
    weights = load_file(next((tmp_path / "export").glob("*.safetensors")))
    assert weights and all(torch.equal(value, state["state_dict"][f"model.{key}"] if f"model.{key}" in
                                       state["state_dict"] else state["state_dict"][key])
                           for key, value in weights.items())
    if averaging == "EMAWeightAveraging":  # the weights before averaging are kept aside, not tested
        assert "current_model_state" in state
    else:  # the averaged weights, validated after training, are the best checkpoint's
        assert results["best_val"] == pytest.approx(results["val"]["val_loss"]) and results["best_epoch"] == 3


def test_batch_limits_are_recorded_and_the_test_outputs_cover_the_rows_the_test_metrics_do(tmp_path):
    import pandas as pd

    proc = dltrain_command("debug=limit", "model=mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    limits = read_results(run_dir)["limits"]  # batches of 64 rows; digits: 1,293 / 144 / 360 rows
    assert limits == {"train": {"limit_train_batches": 3, "rows": 192, "of": 1293},
                      "val": {"limit_val_batches": 2, "rows": 128, "of": 144},
                      "test": {"limit_test_batches": 2, "rows": 128, "of": 360}}
    assert len(pd.read_csv(run_dir / "test_predictions.csv")) == 128
    assert ("trainer.limit_test_batches=2: the test covered 128 of 360 test rows (test metrics, "
            "test_predictions.csv and the plots alike)") in proc.stderr


def test_validating_every_other_epoch_is_said_once_in_dltrains_words_not_as_lightnings_warning(tmp_path):
    proc = dltrain_command(*CPU, "trainer.max_steps=50", "trainer.val_check_interval=0.5",
                           "trainer.check_val_every_n_epoch=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "could not find the monitored key" not in proc.stderr
    assert ("trainer.check_val_every_n_epoch=2: validation runs every 2 epochs, so the best checkpoint (val_loss) "
            "and early stopping consider those epochs only") in proc.stderr
    results = read_results(only_run_dir(tmp_path))
    assert results["max_steps_reached"] == 50 and results["epochs_run"] == 3  # 20 batches an epoch
    assert "trainer.max_steps=50 ended the run in epoch 3" in proc.stderr
