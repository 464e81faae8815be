"""The real `dltrain` command: a run from an unrelated directory, its output, help, and config errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dltrain.paths import config_dir
from conftest import dltrain_command, only_run_dir, read_metrics


def test_a_run_writes_its_directory_under_outputs_and_nothing_else(tmp_path):
    proc = dltrain_command("trainer=cpu", "trainer.max_epochs=2", "model=mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    run_dir = only_run_dir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs_run"] == 2 and results["model"] == "mlp"
    assert {"config.yaml", "metrics.csv", "model_summary.txt", "dltrain.log", ".hydra", "checkpoints"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines() == [
        "- trainer=cpu", "- trainer.max_epochs=2", "- model=mlp"
    ]
    # Progress: one line per epoch (output is not a terminal), the test metrics, and where the run is.
    assert proc.stderr.count("epoch 1/2") == 1 and proc.stderr.count("epoch 2/2") == 1
    assert "test_acc" in proc.stdout and f"{results['test']['test_acc']:.4f}" in proc.stdout
    assert f"run directory: {run_dir}" in proc.stderr
    assert "Traceback" not in proc.stderr and "\r" not in proc.stdout + proc.stderr
    assert len(read_metrics(run_dir)) == 2
    assert "epoch 2/2" in (run_dir / "dltrain.log").read_text()


def test_help_lists_every_group_and_option(tmp_path):
    proc = dltrain_command("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for line in [
        "model: auto, cnn, conv1d, gru, linear, logistic, lstm, mlp, resnet, rnn, softmax, torchvision, transformer",
        "optimizer: adadelta, adagrad, adam, adamw, rmsprop, sgd",
        "scheduler: cosine, none, onecycle, plateau, step",
        "trainer: cpu, ddp, ddp_cpu, default, gpu",
        "data: arrays, breast_cancer, cifar10, csv, diabetes, digits, fashion_mnist, image_folder, iris, linear, "
        "mnist, parquet, reviews, sine, streaming, wine",
    ]:
        assert line in proc.stdout
    for group in (p for p in config_dir().iterdir() if p.is_dir() and p.name != "hydra"):  # every option
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"{group.name}: {options}\n" in proc.stdout
    assert "optimizer.lr" in proc.stdout and "dltrain -m" in proc.stdout
    for command in ("dltrain-eval", "dltrain-predict", "dltrain-export", "dltrain-serve"):
        assert f"{command} ckpt_path=<run dir>" in proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_help_lists_the_schema_keys_and_a_presets_keys_from_its_signature(tmp_path):
    proc = dltrain_command("--help", cwd=tmp_path)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert "a number in [0, 180] (0.0): random rotation" in lines["data.augment.rotation"]
    assert "0 or an integer >= 2 (0)" in lines["cv.folds"]
    proc = dltrain_command("--help", "model=transformer", "optimizer=sgd", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "auto | cls | mean | last (auto)" in lines["model.pooling"]
    assert "a number in [0, 1) (0.9)" in lines["optimizer.momentum"]  # torch's SGD, a range the schema adds
    assert set(lines) == {"model.d_model", "model.heads", "model.layers", "model.ff_size", "model.dropout",
                          "model.positions", "model.pooling", "optimizer.lr", "optimizer.weight_decay",
                          "optimizer.momentum", "optimizer.nesterov"}
    proc = dltrain_command("--help", "scheduler=none", "callbacks=default", "experiment=cnn_digits", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "epoch | step (epoch)" in lines["scheduler.interval"] and "scheduler.scheduler" not in proc.stdout
    assert "an integer >= 0 (5)" in lines["callbacks.early_stopping.patience"]  # the range the schema adds
    assert "the preset it chooses (cnn)" in lines["model"] and "(30)" in lines["trainer.max_epochs"]


def test_the_readmes_key_reference_is_the_schemas():
    from pathlib import Path

    from dltrain.commands.help import markdown_reference

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert readme.split("<!-- keys: start -->\n", 1)[1].split("\n<!-- keys: end -->", 1)[0] == markdown_reference()


def test_a_new_preset_is_checked_by_its_callables_signature_with_no_edit(tmp_path):
    """A preset in the user's own config folder, of a dltrain model and of a torch optimizer no shipped preset
    names: its keys' types and ranges come from the signature (and the schema's ranges for torch's class)."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "optimizer").mkdir()
    (tmp_path / "conf" / "model" / "wide.yaml").write_text(
        "_target_: dltrain.models.mlp.MLP\nname: wide\nfits: [multiclass]\ninputs: [image]\nhidden_sizes: [512]\n"
        "norm: group\n")
    (tmp_path / "conf" / "optimizer" / "nadam.yaml").write_text("_target_: torch.optim.NAdam\n_partial_: true\n"
                                                                "lr: 0.002\nmomentum_decay: 0.004\n")
    folder = f"--config-dir={tmp_path / 'conf'}"
    proc = dltrain_command("validate", folder, "model=wide", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dltrain: error: model.norm='group' is not valid: expected none | batch | layer"), proc.stderr
    proc = dltrain_command("validate", folder, "optimizer=nadam", "optimizer.lr=0", cwd=tmp_path)
    assert proc.returncode == 1 and "optimizer.lr=0 is not valid: expected a number > 0" in proc.stderr
    proc = dltrain_command("validate", folder, "optimizer=nadam", "optimizer.momentum_decay=fast", cwd=tmp_path)
    assert proc.returncode == 1 and "optimizer.momentum_decay='fast' is not valid: expected a number" in proc.stderr
    proc = dltrain_command("validate", folder, "model=wide", "model.norm=layer", "optimizer=nadam", cwd=tmp_path)
    assert proc.returncode == 0 and "the config is valid" in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=foo", "Could not find 'model/foo' Available options in 'model': auto cnn conv1d gru linear logistic lstm mlp "
                      "resnet rnn softmax torchvision transformer"),
        ("optimizer=nope", "Available options in 'optimizer': adadelta adagrad adam adamw rmsprop sgd"),
        ("model.foo=1", "Could not override 'model.foo'"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not valid: expected a number > 0"),
        ("optimizer.lr=abc", "optimizer.lr='abc' is not valid: expected a number > 0"),
        ("model.dropout=1.0", "model.dropout=1.0 is not valid: expected a number in [0, 1)"),
        ("model.dropout=-0.1", "model.dropout=-0.1 is not valid: expected a number in [0, 1)"),
        ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience=-1 is not valid: expected an integer >= 0"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs=1.5 is not valid: expected -1 or an integer > 0"),
        ("model.activation=swish", "model.activation='swish' is not valid: expected relu | leaky_relu | tanh | sigmoid | gelu"),
        ("model=linear", "model=linear fits regression data, but data=digits is a multiclass task"),
        ("trainer.num_nodes=0", "trainer.num_nodes=0 is not valid: expected an integer > 0"),
        ("trainer.precision=8", "trainer.precision=8 is not valid: expected 64 | 32 | 16 | transformer-engine"),
        ("scheduler=step scheduler.interval=hour", "scheduler.interval='hour' is not valid: expected epoch | step"),
        ("scheduler=step +scheduler.frequncy=2", "scheduler.frequncy is not a key of scheduler: did you mean "
                                                 "scheduler.frequency?"),
        ("+compile.fullgraph=true", "compile.fullgraph is not a key of compile: it takes enabled, backend, mode"),
        ("data=sine data.seq_len=0", "data.seq_len=0 is not valid: expected an integer > 0"),
        ("-m --cfg job", "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"),
    ],
)
def test_config_errors_give_one_line_and_exit_code_1(tmp_path, override, message):
    proc = dltrain_command(*override.split(), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dltrain: error: ") and message in lines[0]
    assert not list(tmp_path.glob("outputs/runs/*/results.json"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine without a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_without_a_gpu_is_refused_before_the_data_loads_naming_what_runs_here(tmp_path, trainer):
    proc = dltrain_command(f"trainer={trainer}", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "dltrain: error: trainer.accelerator=gpu asks for a GPU and this machine has none; use trainer=cpu "
        "(trainer=ddp_cpu for several processes), or trainer=default, which takes a GPU where there is one"]
    assert "data: digits" not in proc.stdout + proc.stderr  # refused before the data was loaded and shown


def test_a_gpu_trainer_asking_for_more_gpus_than_there_are_names_the_count_there(monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from dltrain.errors import ConfigError
    from dltrain.training.preflight import check_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_gpus(OmegaConf.create({"accelerator": "gpu", "devices": 2}))  # as many as there are: taken
    check_gpus(OmegaConf.create({"accelerator": "cpu", "devices": 4}))  # CPU processes: not GPUs
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu with trainer.devices=4 asks for 4 GPU\(s\) "
                                          r"and this machine has 2; use trainer.devices=2 or fewer$"):
        check_gpus(OmegaConf.create({"accelerator": "gpu", "devices": 4}))


def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = dltrain_command("optimizer.lr=-1", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError: optimizer.lr=-1" in proc.stderr


def test_help_lists_the_groups_and_options_hydra_itself_sees():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dltrain.commands.help import config_groups
    from dltrain.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        hydra_groups = {g: sorted(loader.get_group_options(g)) for g in loader.list_groups("") if g != "hydra"}
    assert config_groups() == hydra_groups


CONSOLE_SCRIPT = """
import gc, sys
from {module} import {function}
sys.argv = {argv!r}
code = 0
try:
    {function}()
except SystemExit as exc:
    code = exc.code
print("exit", code, "frozen", gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize("module, function, argv, code, frozen", [
    ("dltrain.commands.train", "console_main", ["dltrain", "--help"], 0, True),
    ("dltrain.commands.train", "console_main", ["dltrain", "optimizer.lr=-1"], 1, True),
    ("dltrain.commands.evaluate", "main", ["dltrain-eval"], 1, True),
    ("dltrain.commands.train", "main", ["dltrain", "--help"], 0, False),  # the in-process entry, which tests call
])
def test_console_scripts_leave_what_they_loaded_to_the_exit_not_the_collector(tmp_path, module, function, argv,
                                                                              code, frozen):
    """The console scripts end with gc.freeze(), whichever way they end, so the interpreter's exit does not spend
    a second or two collecting torch's and Lightning's objects."""
    script = CONSOLE_SCRIPT.format(module=module, function=function, argv=argv)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == f"exit {code} frozen {frozen}", proc.stderr


@pytest.mark.parametrize("keys, code, said", [
    ([], 0, "dltrain validate: the config is valid (data=digits model=auto optimizer=adam scheduler=none loss=auto "
            "trainer=default callbacks=default); nothing was trained or written"),
    (["data=csv", "data.path=table.csv", "data.target=y"], 0, "; data files: table.csv; nothing was trained"),
    (["optimizer.lr=-1"], 1, "dltrain: error: optimizer.lr=-1 is not valid: expected a number > 0"),
    (["+optimizer.betaz=[0.9,0.99]"], 1, "did you mean optimizer.betas"),
    (["data=csv", "data.path=missing.csv", "data.target=y"], 1,
     "dltrain: error: data.path: no such file or folder missing.csv"),
    (["data=mnist", "data.root=nowhere"], 1, "dltrain: error: data=mnist: files not found in nowhere/MNIST/raw; set "
                                            "data.download=true to fetch them"),
    (["-m", "optimizer=adam,sgd"], 1, "dltrain validate checks one config: leave out -m"),
])
def test_validate_checks_a_config_and_its_data_files_without_training_or_writing(tmp_path, keys, code, said):
    # rows enough to split: validate builds the data and model as a run does (x is no row number, which would
    # be left out as an identifier)
    (tmp_path / "table.csv").write_text("x,y\n" + "".join(f"{i * 0.5},{i % 2}\n" for i in range(20)))
    proc = dltrain_command("validate", *keys, cwd=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert said in (proc.stdout if code == 0 else proc.stderr)
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no outputs/, no log


def test_validate_checks_a_resume_against_the_run_it_continues(run, tmp_path):
    run_dir, _ = run(["model=mlp", "trainer.max_epochs=1"])
    before = sorted(p.name for p in run_dir.iterdir())
    proc = dltrain_command("validate", f"resume={run_dir}", "trainer.max_epochs=3", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == (
        f"dltrain validate: the config is valid (resuming {run_dir}); nothing was trained or written"), proc.stderr
    proc = dltrain_command("validate", f"resume={run_dir}", "seed=7", cwd=tmp_path)
    assert proc.returncode == 1 and "seed" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (tmp_path / "outputs").exists()


MISTAKE_SCRIPT = """
import sys
from {module} import {function}
sys.argv = {argv!r}
try:
    {function}()
except SystemExit as exc:
    print("exit", exc.code, "imported", sorted(m for m in ("torch", "pytorch_lightning", "pandas") if m in sys.modules))
"""


@pytest.mark.parametrize("module, function, argv, said", [
    ("dltrain.commands.train", "console_main", ["dltrain", "data=csv", "data.path=missing.csv", "data.target=y"],
     "dltrain: error: data.path: no such file or folder missing.csv"),
    ("dltrain.commands.train", "console_main", ["dltrain", "data=mnist", "data.root=nowhere"],
     "dltrain: error: data=mnist: files not found in nowhere/MNIST/raw"),
    ("dltrain.commands.train", "console_main", ["dltrain", "cv.folds=1"], "cv.folds=1 is not valid"),
    ("dltrain.commands.train", "console_main", ["dltrain", "optimizer.lrr=0.1"], "Could not override 'optimizer.lrr'"),
    ("dltrain.commands.evaluate", "main", ["dltrain-eval", "ckpt_path=missing.ckpt"],
     "dltrain-eval: error: no checkpoint at missing.ckpt"),
    ("dltrain.commands.predict", "main", ["dltrain-predict", "ckpt_path=missing.ckpt", "input=x.csv"],
     "dltrain-predict: error: no checkpoint at missing.ckpt"),
    ("dltrain.commands.serve", "main", ["dltrain-serve", "ckpt_path=missing.ckpt"],
     "dltrain-serve: error: no checkpoint at missing.ckpt"),
])
def test_a_mistake_checkable_without_torch_is_answered_before_torch_is_imported(tmp_path, module, function, argv,
                                                                                 said):
    """A wrong path, a value out of range or a misspelt key costs no more than composing the config: the one
    line comes before torch, Lightning or pandas is imported (benchmarks/performance.py times them)."""
    script = MISTAKE_SCRIPT.format(module=module, function=function, argv=argv)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "exit 1 imported []", proc.stdout + proc.stderr
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
