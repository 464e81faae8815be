"""Checkpoints, run directories and data files choose no code: only dltrain's own presets' callables run.

Each crafted file names a foreign `_target_`: plant_marker below, a function of this module importable by its
dotted path, which writes a marker file when called. The commands must refuse the file in one line, exit 1,
with no marker and no output file.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAST, dltrain_command, read_results
from dltrain.config.compose import load_config
from dltrain.training.train import train

PAYLOAD = "test_trust.plant_marker"
TESTS = Path(__file__).parent
# the groups of a stored config, and where a _target_ sits in each
GROUPS = {"model": "model", "loss": "loss", "data": "data", "optimizer": "optimizer",
          "scheduler": "scheduler.scheduler", "data.augment": "data.augment",
          "callbacks": "callbacks.early_stopping", "trainer": "trainer", "logger": "logger"}


def plant_marker(*args, **kwargs):
    """The foreign code: proof that it ran."""
    Path(os.environ["DLTRAIN_MARKER"]).write_text("ran")
    import pytorch_lightning as pl

    return pl.Callback()


def command(name: str, *args: str, cwd: Path, marker: Path) -> subprocess.CompletedProcess:
    """A dltrain console script, able to import this module (as any installed package could be)."""
    env = {"DLTRAIN_MARKER": str(marker), "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return dltrain_command(*args, cwd=cwd, env=env, script=name)


def with_target(config: dict, where: str, target: str = PAYLOAD) -> dict:
    """`config` with a `_target_` set at `where` (a dotted path; a missing or null part becomes a mapping)."""
    node = config
    for part in where.split("."):
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node["_target_"] = target
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch MLP run on the digits."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(FAST + ["model=mlp"]), run_dir)
    return run_dir


def crafted_checkpoint(trained: Path, where: str, out: Path) -> Path:
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    with_target(checkpoint["hyper_parameters"]["config"], where)
    torch.save(checkpoint, out)
    assert torch.load(out, weights_only=True)  # passes weights_only loading: only the config is foreign
    return out


def test_the_payload_runs_when_built_so_a_missing_marker_means_refused(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    marker = tmp_path / "marker"
    monkeypatch.setenv("DLTRAIN_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(TESTS))
    instantiate({"_target_": PAYLOAD})
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("group", GROUPS)
def test_eval_and_predict_refuse_a_checkpoint_naming_foreign_code(trained, tmp_path, group):
    evil = crafted_checkpoint(trained, GROUPS[group], tmp_path / "evil.ckpt")
    marker = tmp_path / "marker"
    inputs = tmp_path / "rows.npy"
    np.save(inputs, np.zeros((3, 1, 8, 8), dtype=np.float32))
    for name, *args in (("dltrain-eval", f"output={tmp_path / 'eval.json'}"),
                        ("dltrain-predict", f"input={inputs}", f"output={tmp_path / 'pred.csv'}")):
        proc = command(name, f"ckpt_path={evil}", *args, cwd=tmp_path, marker=marker)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert f"asks to build {GROUPS[group]} with _target_='{PAYLOAD}', which is not dltrain's own" in proc.stderr
        assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt", "rows.npy"]  # nothing written


def files(run_dir: Path) -> dict[Path, bytes]:
    """A run directory's files and their bytes, but its log (where the refusal is written too)."""
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "dltrain.log"}


def crafted_run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run that a resume may continue (trainer.max_epochs=3)."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    return run_dir


@pytest.mark.parametrize("group", GROUPS)
def test_resume_refuses_a_run_dir_whose_config_yaml_names_foreign_code(trained, tmp_path, group):
    run_dir = crafted_run(trained, tmp_path)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    OmegaConf.save(with_target(config, GROUPS[group]), run_dir / "config.yaml")
    before = files(run_dir)
    marker = tmp_path / "marker"
    proc = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path, marker=marker)
    assert proc.returncode == 1, proc.stderr
    assert f"{run_dir / 'config.yaml'} asks to build {GROUPS[group]} with _target_='{PAYLOAD}'" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert files(run_dir) == before  # nothing written


@pytest.mark.parametrize("group", ["model", "optimizer", "callbacks"])
def test_resume_refuses_a_last_checkpoint_naming_foreign_code(trained, tmp_path, group):
    run_dir = crafted_run(trained, tmp_path)
    crafted_checkpoint(trained, GROUPS[group], run_dir / "checkpoints" / "last.ckpt")
    before = files(run_dir)
    marker = tmp_path / "marker"
    proc = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path, marker=marker)
    assert proc.returncode == 1, proc.stderr
    assert f"last.ckpt asks to build {GROUPS[group]} with _target_='{PAYLOAD}'" in proc.stderr
    assert not marker.exists()
    assert files(run_dir) == before


def test_an_interpolation_in_a_stored_config_is_refused(trained, tmp_path):
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["config"]["data"]["path"] = "${oc.env:HOME}/.ssh/id_rsa"
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    proc = command("dltrain-eval", f"ckpt_path={tmp_path / 'evil.ckpt'}", cwd=tmp_path, marker=tmp_path / "m")
    assert proc.returncode == 1 and "holds an interpolation at data.path" in proc.stderr


def test_the_command_line_stays_free_and_a_resume_trusts_what_it_names_again(tmp_path):
    """A callback the user names on the command line is their code: it runs. Its run's checkpoint names it, so
    reading that checkpoint needs the user to name it again (trust= for eval, the key again for resume)."""
    marker = tmp_path / "marker"
    spy = f"+callbacks.spy._target_={PAYLOAD}"
    proc = command("dltrain", *FAST, "model=mlp", "trainer.max_epochs=1", spy, cwd=tmp_path, marker=marker)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "ran"
    marker.unlink()
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    refused = command("dltrain-eval", f"ckpt_path={run_dir}", cwd=tmp_path, marker=marker)
    assert refused.returncode == 1 and f"callbacks.spy with _target_='{PAYLOAD}'" in refused.stderr
    trusted = command("dltrain-eval", f"ckpt_path={run_dir}", f"trust={PAYLOAD}", cwd=tmp_path, marker=marker)
    assert trusted.returncode == 0, trusted.stderr
    assert not marker.exists()  # eval builds no callbacks
    again = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path, marker=marker)
    assert again.returncode == 1 and "callbacks.spy" in again.stderr and not marker.exists()
    again = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=2", spy,
                    cwd=tmp_path, marker=marker)
    assert again.returncode == 0, again.stderr
    assert marker.read_text() == "ran" and read_results(run_dir)["epochs_run"] == 2


def test_a_preset_in_a_config_dir_the_user_names_is_trusted_on_resume(tmp_path):
    """--config-dir presets are the user's own: a resume that names the folder again may rebuild them."""
    conf = tmp_path / "myconf" / "callbacks"
    conf.mkdir(parents=True)
    (conf / "spied.yaml").write_text(f"defaults:\n  - default\n  - _self_\nspy:\n  _target_: {PAYLOAD}\n")
    marker = tmp_path / "marker"
    config_dir = f"--config-dir={tmp_path / 'myconf'}"
    proc = command("dltrain", config_dir, *FAST, "model=mlp", "trainer.max_epochs=1", "callbacks=spied",
                   cwd=tmp_path, marker=marker)
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    refused = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path, marker=marker)
    assert refused.returncode == 1 and "callbacks.spy" in refused.stderr
    proc = command("dltrain", config_dir, f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path, marker=marker)
    assert proc.returncode == 0, proc.stderr
    assert read_results(run_dir)["epochs_run"] == 2


def test_the_allowlist_is_exactly_the_shipped_presets_targets():
    from dltrain.config.trust import preset_targets
    from dltrain.paths import config_dir

    allowed = preset_targets(config_dir())
    assert ("model", "dltrain.models.mlp.MLP") in allowed
    assert ("callbacks.*", "pytorch_lightning.callbacks.EarlyStopping") in allowed
    assert ("scheduler.scheduler", "torch.optim.lr_scheduler.StepLR") in allowed
    assert ("data", "dltrain.data.tables.table") in allowed
    # a callable of one group is not allowed in another
    assert ("optimizer", "dltrain.data.tables.table") not in allowed
    shipped = {line.split("_target_:")[1].split("#")[0].strip()
               for file in config_dir().rglob("*.yaml") for line in file.read_text().splitlines()
               if "_target_:" in line}
    assert {target for _, target in allowed} == shipped


def limited_memory():
    """preexec_fn: at most 6 GiB of address space, so a command that allocated what a crafted file asks fails."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))


def edited(trained: Path, out: Path, edit) -> Path:
    checkpoint = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, out)
    return out


def _set(mapping: dict, key: str, value) -> None:
    mapping[key] = value


FIRST = "model.net.1.0.weight"  # the MLP's first layer, (128, 64) on the digits
CRAFTED = {
    "a wrong dtype": (lambda c: _set(c["state_dict"], FIRST, c["state_dict"][FIRST].double()),
                      "the checkpoint's model.net.1.0.weight is a torch.float64 tensor of shape (128, 64), but"),
    "a wrong shape": (lambda c: _set(c["state_dict"], FIRST, torch.zeros(128, 65)),
                      "the checkpoint's model.net.1.0.weight is a torch.float32 tensor of shape (128, 65)"),
    "a missing tensor": (lambda c: c["state_dict"].pop(FIRST),
                         "the checkpoint's weights do not fit the network its own config describes"),
    "a non-tensor value": (lambda c: _set(c["state_dict"], FIRST, [[0.0] * 64] * 128),
                           "state_dict['model.net.1.0.weight'] is a list where a tensor belongs"),
    "an absurd class count": (lambda c: _set(c["hyper_parameters"]["data_spec"], "num_classes", 10**10),
                              "10000000000 output(s)) has a torch.float32 tensor of shape (10000000000, 64)"),
    "an absurd input shape": (lambda c: _set(c["hyper_parameters"]["data_spec"], "input_shape", [10**6, 10**6]),
                              "data spec has input_shape=[1000000, 1000000]: expected 1 to 3 positive sizes"),
    "a huge hidden layer": (lambda c: _set(c["hyper_parameters"]["config"]["model"], "hidden_sizes", [10**9]),
                            "config has model.hidden_sizes[0]"),
    "a spec of the wrong type": (lambda c: _set(c["hyper_parameters"]["data_spec"], "task", ["multiclass"]),
                                 "data spec has task=['multiclass']: expected multiclass | binary | regression"),
    "a config of the wrong type": (lambda c: _set(c["hyper_parameters"]["config"]["model"], "dropout", "lots"),
                                   "stored config is not valid: model.dropout='lots' is not valid"),
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_a_crafted_checkpoint_is_refused_in_one_line_without_allocating_what_it_asks(trained, tmp_path, kind):
    edit, expected = CRAFTED[kind]
    evil = edited(trained, tmp_path / "evil.ckpt", edit)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([str(Path(sys.executable).with_name("dltrain-eval")), f"ckpt_path={evil}"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limited_memory)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr and "refused" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt"]


class Payload:
    """Pickled, it names plant_marker: unpickling it would run that."""

    def __reduce__(self):
        return (plant_marker, ())


def test_numpy_files_holding_objects_are_refused_and_nothing_runs(tmp_path, trained):
    marker = tmp_path / "marker"
    objects = np.array([Payload(), Payload()], dtype=object)
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "objects.npz", x=objects, y=np.array([0, 1]))
    proc = command("dltrain-predict", f"ckpt_path={trained}", f"input={tmp_path / 'objects.npy'}", cwd=tmp_path,
                   marker=marker)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "cannot be read as a numpy array file of numbers (Object arrays cannot be loaded" in proc.stderr
    for source in ("data.path=objects.npz", "data.path=objects.npy"):
        proc = command("dltrain", *FAST, "model=mlp", "data=arrays", source, f"data.targets_path={tmp_path / 'objects.npy'}",
                       cwd=tmp_path, marker=marker)
        assert proc.returncode == 1 and "Object arrays cannot be loaded when allow_pickle=False" in proc.stderr
    assert not marker.exists()


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    from datafiles import write_cifar10

    write_cifar10(tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("wb") as handle:
        pickle.dump({"data": np.zeros((20, 3072), np.uint8), "labels": [Payload()] * 20}, handle)
    marker = tmp_path / "marker"
    proc = command("dltrain", *FAST, "data=cifar10", f"data.root={tmp_path}", cwd=tmp_path, marker=marker)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "data_batch_3: refused, not a CIFAR-10 batch of arrays (it names test_trust.plant_marker" in proc.stderr
    assert not marker.exists()


def test_an_image_past_pillows_decompression_bomb_limit_is_refused(tmp_path):
    from PIL import Image

    from datafiles import write_image_folder

    write_image_folder(tmp_path / "images")
    Image.new("1", (10_000, 10_000)).save(tmp_path / "images" / "light" / "bomb.png")  # 100 M pixels in ~12 kB
    proc = dltrain_command(*FAST, "data=image_folder", f"data.path={tmp_path / 'images'}", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "bomb.png: refused, an image larger than pillow's limit of 89,478,485 pixels" in proc.stderr


# every model preset with data it fits
PRESETS = {"cnn": "digits", "mlp": "iris", "linear": "diabetes", "logistic": "breast_cancer", "softmax": "wine",
           "rnn": "sine", "lstm": "sine", "gru": "sine", "conv1d": "sine"}


@pytest.mark.parametrize("model", PRESETS)
def test_a_normal_checkpoint_of_every_preset_evaluates_predicts_and_resumes(tmp_path, model):
    from dltrain.commands.evaluate import evaluate
    from dltrain.commands.predict import predict
    from dltrain.config.resume import resumed_config

    run_dir = tmp_path / "run"
    results = train(load_config(FAST + [f"model={model}", f"data={PRESETS[model]}"]), run_dir)
    assert evaluate(str(run_dir))["metrics"] == pytest.approx(results["test"], rel=1e-5)
    shape = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["hyper_parameters"]["data_spec"][
        "input_shape"]
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).random((4, *shape), dtype=np.float32))
    predictions = predict(str(run_dir), str(tmp_path / "rows.npy"))
    assert len(predictions.read_text().splitlines()) == 5
    resumed = train(resumed_config(run_dir, ["trainer.max_epochs=3"]), run_dir, resume=True)
    assert (resumed["status"], resumed["epochs_run"]) == ("completed", 3)


RESUME_STATES = {
    "counters": (lambda c: _set(c, "epoch", "one"), "epoch='one' is not a count"),
    "loops": (lambda c: _set(c, "loops", 7), "loops is a int, not a dict"),
    "optimizer keys": (lambda c: _set(c["optimizer_states"][0], "state", {0: {"exp_avg": 5}}),
                       "the optimizer state of parameter 0 is not that of this optimizer"),
    "optimizer shapes": (lambda c: _set(c["optimizer_states"][0]["state"][0], "exp_avg", torch.zeros(3)),
                         "the optimizer's exp_avg of parameter 0 is not of the kind and shape it needs"),
    "generator": (lambda c: _set(c["callbacks"], "RngState", {"torch": torch.zeros(3)}),
                  "its random generator state is not a generator state of torch"),
}


@pytest.mark.parametrize("kind", RESUME_STATES)
def test_resume_refuses_a_crafted_training_state_before_training(trained, tmp_path, kind):
    edit, expected = RESUME_STATES[kind]
    run_dir = crafted_run(trained, tmp_path)
    edited(trained, run_dir / "checkpoints" / "last.ckpt", edit)
    before = files(run_dir)
    proc = dltrain_command(f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert expected in proc.stderr and "refused (resume needs a checkpoint dltrain wrote)" in proc.stderr
    assert files(run_dir) == before


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"])
def test_a_normal_checkpoint_of_every_optimizer_resumes(tmp_path, optimizer):
    from dltrain.config.resume import resumed_config

    run_dir = tmp_path / "run"
    train(load_config(FAST + ["model=mlp", f"optimizer={optimizer}", "trainer.max_epochs=1"]), run_dir)
    resumed = train(resumed_config(run_dir, ["trainer.max_epochs=2"]), run_dir, resume=True)
    assert (resumed["status"], resumed["epochs_run"]) == ("completed", 2)


STOCK = ["+callbacks.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor",
         "+logger._target_=pytorch_lightning.loggers.CSVLogger"]  # Lightning's own, and named by no preset


def test_lightning_own_callbacks_and_loggers_need_no_trust_to_evaluate_predict_and_export(tmp_path):
    """eval, predict and export build neither callbacks nor loggers: a run's Lightning callback and logger are
    data to them (no trust=); a resume, which builds them, still needs them named on its command line."""
    marker = tmp_path / "marker"
    proc = command("dltrain", *FAST, "model=softmax", "trainer.max_epochs=1", *STOCK, cwd=tmp_path, marker=marker)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    results = read_results(run_dir)
    assert (run_dir / "lightning_logs" / "version_0" / "metrics.csv").exists() and "csv" in results["loggers"]
    np.save(tmp_path / "rows.npy", np.zeros((3, 1, 8, 8), dtype=np.float32))
    for name, *args in (("dltrain-eval", f"output={tmp_path / 'eval.json'}"),
                        ("dltrain-predict", f"input={tmp_path / 'rows.npy'}", f"output={tmp_path / 'pred.csv'}"),
                        ("dltrain-export", "format=safetensors", f"output={tmp_path / 'export'}")):
        proc = command(name, f"ckpt_path={run_dir}", *args, cwd=tmp_path, marker=marker)
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
    evaluated = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert evaluated == pytest.approx(results["test"], rel=1e-5)
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 4
    assert (tmp_path / "export" / "model.safetensors").exists()
    refused = command("dltrain", f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path, marker=marker)
    assert refused.returncode == 1 and "callbacks.lr_monitor with _target_=" in refused.stderr


@pytest.mark.parametrize("where, target, passes", [
    ("callbacks.timer", "pytorch_lightning.callbacks.Timer", True),  # no preset of dltrain's names it
    ("logger", "pytorch_lightning.loggers.CSVLogger", True),
    ("callbacks.wandb", "pytorch_lightning.loggers.WandbLogger", False),  # a logger where callbacks go
    ("model", "pytorch_lightning.callbacks.StochasticWeightAveraging", False),  # a place something is built
    ("callbacks.swa", "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor", False),  # only the exact name
    ("callbacks.swa", "pytorch_lightning.callbacks.progress.rich_progress.os.system", False),  # reached through
    ("callbacks.swa", "pytorch_lightning.callbacks.os", False),
])
def test_only_lightning_own_classes_at_their_place_are_data_and_only_to_a_network_reader(where, target, passes):
    from dltrain.config.trust import UntrustedConfig, check_stored_config

    config = with_target({"model": {"name": "mlp"}}, where, target)
    if passes:
        assert check_stored_config(config, "f.ckpt", network_only=True) == config
    else:
        with pytest.raises(UntrustedConfig, match=f"_target_='{target}'"):
            check_stored_config(config, "f.ckpt", network_only=True)
    with pytest.raises(UntrustedConfig, match="which is not dltrain's own"):  # a resume builds them
        check_stored_config(config, "f.ckpt")
