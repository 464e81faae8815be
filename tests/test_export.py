"""dltrain-export: every model preset in every format, each file computing what the checkpoint computes when
run by its own runtime, preprocessing.json enough to use the ONNX file without dltrain (the README's example,
run as written), and the refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import dltrain_command
from datafiles import write_table
from dltrain.checkpoints.reading import read_checkpoint
from dltrain.training.restore import load_module
from dltrain.data.datamodule import stored_datamodule
from dltrain.data.spec import DataSpec
from dltrain.errors import ConfigError
from dltrain.commands.export import export
from dltrain.inference.formats import ExportError, export_network, load_safetensors
from dltrain.config.trust import UntrustedConfig

README = Path(__file__).resolve().parents[1] / "README.md"
ONE_EPOCH = ["trainer.max_epochs=1"]
# An export needs a checkpoint, not a good model: a few batches of each stage keep the twelve presets' runs
# short (the export is still checked on every test row).
FEW_BATCHES = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
PRESETS = {  # each model preset on data it fits: a multi-class, binary and regression task among them
    "cnn": ["model=cnn"],
    "mlp": ["data=wine", "model=mlp"],
    "softmax": ["data=iris", "model=softmax"],
    "logistic": ["data=breast_cancer", "model=logistic"],
    "linear": ["data=diabetes", "model=linear"],
    "lstm": ["data=sine", "model=lstm"],
    "conv1d": ["data=sine", "model=conv1d"],
    "gru": ["data=sine", "data.target=frequency", "model=gru"],
    "rnn": ["model=rnn"],  # digits read row by row
    "resnet": ["model=resnet"],
    "transformer": ["data=wine", "model=transformer"],  # a table: one token per feature
    "torchvision": ["model=torchvision", "model.arch=shufflenet_v2_x0_5"],  # the fastest to train here
}
BLOCK_DLTRAIN = "import sys; sys.modules['dltrain'] = None  # any import of dltrain now fails\n"


def test_the_presets_listed_here_are_every_model_preset():
    shipped = {p.stem for p in (README.parent / "conf" / "model").glob("*.yaml")} - {"auto"}
    assert shipped == set(PRESETS)


@pytest.mark.parametrize("preset", [p if p in ("mlp", "softmax") else pytest.param(p, marks=pytest.mark.slow)
                                    for p in sorted(PRESETS)])  # two quick ones in `pytest -m "not slow"`
def test_every_model_preset_exports_in_every_format_and_each_file_computes_what_the_checkpoint_does(
        run, tmp_path, preset):
    run_dir, _ = run(PRESETS[preset] + ONE_EPOCH + FEW_BATCHES)
    written = export(str(run_dir), "all", max_accuracy_drop=100)  # a few batches' model: int8 may cost points
    folder = run_dir / "export"
    assert sorted(p.name for p in written) == ["model.int8.onnx", "model.onnx", "model.pt2", "model.safetensors"]
    quantized = json.loads((folder / "model.int8.onnx.check.json").read_text())
    assert quantized["passed"] and quantized["int8_bytes"] == (folder / "model.int8.onnx").stat().st_size
    module = load_module(read_checkpoint(run_dir / "checkpoints" / "best.ckpt")).eval()
    spec, test_rows = module.spec, len(stored_datamodule(module.hparams.config, module.spec).test_set)
    for name in ("model.onnx", "model.pt2", "model.safetensors"):
        check = json.loads((folder / f"{name}.check.json").read_text())
        assert check["passed"] and check["max_abs_difference"] <= 1e-5 and check["tolerance"] == 1e-5
        assert check["rows"] > 0 and check["checked_on"] == "the run's test rows"
        if spec.task != "regression":
            assert check["same_class_rows"] == check["rows"]
        assert check["rows"] == test_rows
    # The files on other batch sizes than they were checked on: one row and seven (the batch is dynamic).
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(folder / "model.pt2").module()
    rebuilt = load_safetensors(folder)
    for batch in (1, 7):
        x = torch.rand(batch, *spec.input_shape)
        with torch.no_grad():
            want = module(x).numpy() / module.temperature  # the calibration's temperature is inside the files
            assert np.abs(session.run(None, {"input": x.numpy()})[0] - want).max() <= 1e-5
            assert np.abs(program(x).numpy() - want).max() <= 1e-5
            assert np.abs(rebuilt(x).numpy() - want).max() == 0
    name = session.get_outputs()[0].name
    assert session.get_inputs()[0].name == "input" and name == ("output" if spec.task == "regression" else "logits")
    assert session.get_inputs()[0].shape[0] == "batch"
    prep = json.loads((folder / "preprocessing.json").read_text())
    assert prep["input"]["shape"] == ["batch", *spec.input_shape] and prep["task"] == spec.task
    assert prep["output"]["name"] == name and prep["model"] == preset
    if spec.task == "regression":
        assert (prep["output"]["mean"], prep["output"]["std"]) == (spec.target_mean, spec.target_std)
    else:
        assert prep["output"]["classes"] == spec.labels()


@pytest.mark.slow
def test_a_pt2_runs_where_dltrain_cannot_be_imported(run, tmp_path):
    run_dir, _ = run(PRESETS["lstm"] + ONE_EPOCH + FEW_BATCHES)
    export(str(run_dir), "torch_export", output=str(tmp_path / "out"))
    x = torch.rand(3, 20, 1)
    np.save(tmp_path / "x.npy", x.numpy())
    script = BLOCK_DLTRAIN + (
        "import numpy, torch\n"
        f"program = torch.export.load({str(tmp_path / 'out' / 'model.pt2')!r}).module()\n"
        f"x = torch.from_numpy(numpy.load({str(tmp_path / 'x.npy')!r}))\n"
        f"numpy.save({str(tmp_path / 'y.npy')!r}, program(x).detach().numpy())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module = load_module(read_checkpoint(run_dir / "checkpoints" / "best.ckpt")).eval()
    with torch.no_grad():
        assert np.abs(np.load(tmp_path / "y.npy") - module(x).numpy()).max() <= 1e-6


def readme_onnx_example() -> str:
    """The README's Python example that uses an exported ONNX file with onnxruntime alone."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "onnxruntime" in b]
    assert len(blocks) == 1, "the README holds one onnxruntime example"
    return blocks[0]


@pytest.mark.slow
def test_the_readmes_onnx_example_runs_as_written_without_dltrain_and_agrees_with_dltrain_predict(tmp_path):
    """The README's table run (numbers, a text column, an empty value), exported; its example, with only the run
    folder named, gives dltrain-predict's classes and probabilities on new.csv."""
    write_table(tmp_path / "train.csv")
    frame = pd.read_csv(tmp_path / "train.csv")
    frame.drop(columns="label")[:25].to_csv(tmp_path / "new.csv", index=False)
    proc = dltrain_command("data=csv", "data.path=train.csv", "data.target=label", "data.missing=impute",
                           "trainer.max_epochs=3",
                           "hydra.run.dir=outputs/runs/made", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = dltrain_command("ckpt_path=outputs/runs/made", "format=onnx", cwd=tmp_path, script="dltrain-export")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^onnx: outputs/runs/made/export/model.onnx \(opset \d+\); run by onnxruntime on the run's "
                     r"test rows \(\d+\): largest difference from the checkpoint .* \(allowed 1e-05\), the same class "
                     r"on (\d+)/\1 rows$", proc.stdout, re.M), proc.stdout
    example = readme_onnx_example().replace("<run>", "made")
    proc = subprocess.run([sys.executable, "-c", BLOCK_DLTRAIN + example], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line.split() for line in proc.stdout.splitlines()]
    proc = dltrain_command("ckpt_path=outputs/runs/made", "input=new.csv", cwd=tmp_path, script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = pd.read_csv(tmp_path / "outputs/runs/made/predictions_new.csv")
    assert [row[0] for row in printed] == predicted.prediction.tolist()
    probability = predicted[[c for c in predicted.columns if c.startswith("prob_")]].max(axis=1)
    assert np.allclose([float(row[1]) for row in printed], probability, atol=1e-5)
    assert frame.isna().any().any()  # the rows hold an empty value, which the example imputes as training did


def test_a_format_unknown_or_a_runtime_missing_is_one_line(tmp_path, monkeypatch):
    proc = dltrain_command("ckpt_path=nowhere", "format=tflite", cwd=tmp_path, script="dltrain-export")
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dltrain-export: error: format=tflite is not valid: expected onnx | onnx_int8 | torch_export | safetensors, several as "
        "format=[onnx,safetensors], or all")
    import importlib.util

    find_spec = importlib.util.find_spec
    def lacking(package):
        return lambda name, *a: None if name == package else find_spec(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", lacking("onnxruntime"))
    with pytest.raises(ConfigError, match=r'needs the package onnxruntime, which is not installed: '
                                          r'pip install "dltrain\[export\]"'):
        export("nowhere", "onnx")
    from dltrain.commands.serve import serve

    monkeypatch.setattr(importlib.util, "find_spec", lacking("uvicorn"))
    with pytest.raises(ConfigError, match=r'^dltrain-serve needs the package uvicorn, which is not installed: '
                                          r'pip install "dltrain\[serve\]"$'):
        serve("nowhere")
    monkeypatch.undo()
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match=r"^output=.*taken is a file: an export is a folder of files"):
        export("nowhere", "onnx", output=str(tmp_path / "taken"))
    (tmp_path / "notes.txt").write_text("hello")
    proc = dltrain_command(str(tmp_path / "notes.txt"), "format=safetensors", cwd=tmp_path, script="dltrain-export")
    assert proc.returncode == 1 and "is not a checkpoint" in proc.stderr and len(proc.stderr.splitlines()) == 1


class DataDependent(torch.nn.Module):
    """A network whose path depends on its input's values: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_network_that_cannot_be_exported_is_refused_naming_the_formats_that_work():
    spec = DataSpec("t", "multiclass", (4,), 3)
    record = {"config": {"model": {"name": "custom"}}, "data_spec": spec.to_dict()}
    for fmt in ("onnx", "torch_export"):
        with pytest.raises(ExportError, match=rf"^model=custom cannot be exported as {fmt} \(.*\); formats that "
                                              r"work for it: safetensors$"):
            export_network(DataDependent(), spec, record, [fmt], torch.rand(5, 4))


def test_an_export_writes_nothing_when_one_format_fails_and_its_config_file_chooses_no_code(run, tmp_path, monkeypatch):
    run_dir, _ = run(PRESETS["softmax"] + ONE_EPOCH)
    import dltrain.inference.formats as exporting

    def broken(*args):
        raise RuntimeError("no")

    monkeypatch.setitem(exporting._WRITERS, "torch_export", broken)
    with pytest.raises(ExportError, match="cannot be exported as torch_export"):
        export(str(run_dir), "[safetensors,torch_export]", output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # safetensors, made first, was not written either
    monkeypatch.undo()
    export(str(run_dir), "safetensors", output=str(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "model_config.json").read_text())
    config["config"]["model"]["_target_"] = "os.system"
    (tmp_path / "out" / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(UntrustedConfig, match=r"asks to build model with _target_='os.system'"):
        load_safetensors(tmp_path / "out")


KILL_AFTER_FIRST_WRITE = """
import os, sys
import dltrain.rundir.files as run_files
write_with = run_files.write_with
def killed(*args, **kwargs):
    write_with(*args, **kwargs)
    os._exit(9)  # as a kill -9 would: no cleanup, no finally
run_files.write_with = killed
from dltrain.commands.export import export
export(sys.argv[1], "[onnx,safetensors]", output=sys.argv[2])
"""


@pytest.mark.slow
def test_an_export_killed_between_writes_leaves_no_set_and_the_next_one_clears_it_and_writes_it_whole(run, tmp_path):
    import hashlib

    run_dir, _ = run(PRESETS["softmax"] + ONE_EPOCH)
    out = tmp_path / "shipped"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_WRITE, str(run_dir), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not out.exists()  # the first file was written, into a hidden folder beside it: no part of a set
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shipped.")] != []
    export(str(run_dir), "[onnx,safetensors]", output=str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "shipped"]  # the killed run's leftovers cleared
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert {"model.onnx", "model.safetensors", "preprocessing.json", "model_config.json"} <= set(manifest["files"])
    for name, facts in manifest["files"].items():
        assert facts["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    assert manifest["epoch"] == json.loads((out / "model.onnx.check.json").read_text())["epoch"] == 1
    # A kill while an older export is there leaves that one whole; the next export replaces it whole.
    before = (out / "manifest.json").read_text()
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_WRITE, str(run_dir), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 9 and (out / "manifest.json").read_text() == before
    export(str(run_dir), "safetensors", output=str(out))
    assert sorted(json.loads((out / "manifest.json").read_text())["files"]) == [
        "model.safetensors", "model.safetensors.check.json", "model_config.json", "preprocessing.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "shipped"] and not (out / "model.onnx").exists()


@pytest.mark.parametrize("where, message", [
    ("taken/inside", r"^output=.*taken/inside: cannot make this folder, .*taken is a file, not a folder$"),
    ("/proc/nowhere/export", r"^output=/proc/nowhere/export: cannot make this folder \(No such file or directory: "
                             r"/proc/nowhere\); choose a folder you may write to$"),
    ("mixed", r"^output=.*mixed holds files that are not an export's \(notes.txt\); an export replaces its folder "
              r"whole: give a new or an export's folder$"),
])
def test_an_output_folder_that_cannot_be_written_is_one_line_naming_it(tmp_path, where, message):
    (tmp_path / "taken").write_text("")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.txt").write_text("mine")
    softmax = tmp_path / "run"
    from conftest import train_run

    train_run(softmax, PRESETS["softmax"] + ONE_EPOCH)
    proc = dltrain_command(f"ckpt_path={softmax}", f"output={tmp_path / where if not where.startswith('/') else where}",
                           cwd=tmp_path, script="dltrain-export")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.match(message, proc.stderr.strip().removeprefix("dltrain-export: error: ")), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and (tmp_path / "mixed" / "notes.txt").read_text() == "mine"


def test_an_export_of_a_streamed_table_run_passes_its_own_check_on_the_run_s_test_rows(run, tmp_path):
    write_table(tmp_path / "t.csv")
    run_dir, results = run(["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=label", "data.stream=true",
                            "model=mlp", *ONE_EPOCH])
    assert results["data_path"]["streamed"] is True
    export(str(run_dir), "onnx", output=str(tmp_path / "out"))
    check = json.loads((tmp_path / "out" / "model.onnx.check.json").read_text())
    assert check["passed"] and check["max_abs_difference"] <= check["tolerance"]
    assert check["checked_on"] == "the run's test rows" and check["rows"] == results["dropped_rows"]["test"]["rows_read"]
    described = json.loads((tmp_path / "out" / "preprocessing.json").read_text())
    assert [c["name"] for c in described["table"]["columns"]] == ["size", "colour", "noise"]
