"""dltrain-export format=onnx_int8: the int8 file beside the float one, its cost in accuracy measured on the test
rows against the checkpoint's, refused past max_accuracy_drop with an older export left whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import dltrain_command, train_run
from dltrain.commands.export import export
from dltrain.errors import ConfigError
from dltrain.inference import formats
from dltrain.inference.formats import ExportError


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """An MLP trained on digits for a few epochs (a model whose int8 file keeps its accuracy)."""
    run_dir = tmp_path_factory.mktemp("int8") / "run"
    train_run(run_dir, ["model=mlp", "trainer.max_epochs=4"])
    return run_dir


def test_the_int8_file_is_written_beside_the_float_one_smaller_and_within_the_bound(mlp_run):
    written = export(str(mlp_run), "onnx_int8")
    folder = mlp_run / "export"
    assert [p.name for p in written] == ["model.onnx", "model.int8.onnx"]  # the float file comes with it
    check = json.loads((folder / "model.int8.onnx.check.json").read_text())
    assert check["int8_bytes"] == (folder / "model.int8.onnx").stat().st_size < (folder / "model.onnx").stat().st_size
    assert check["float_bytes"] == (folder / "model.onnx").stat().st_size
    assert check["metric"] == "accuracy (%)" and check["rows"] == 360 and check["passed"]
    assert check["drop_points"] == pytest.approx(check["float"] - check["int8"], abs=1e-3)
    assert check["drop_points"] <= 1.0 and check["max_accuracy_drop"] == 1.0
    assert set(check["latency_ms"]) == {f"{side}_ms_batch_{n}" for side in ("float", "int8") for n in (1, 256)}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "model.int8.onnx" in manifest["files"] and manifest["formats"] == ["onnx", "onnx_int8"]
    # The file itself: onnxruntime runs it on any batch size, near the float file's outputs.
    import onnxruntime

    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    float_out, int8_out = (onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
                           .run(None, {"input": x})[0] for name in ("model.onnx", "model.int8.onnx"))
    assert int8_out.shape == float_out.shape == (7, 10) and 0 < np.abs(int8_out - float_out).max() < 0.5


def test_an_int8_file_that_costs_more_than_the_bound_is_refused_and_the_older_export_kept(mlp_run, monkeypatch):
    export(str(mlp_run), "onnx")
    folder = mlp_run / "export"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = formats._run_onnx

    def lossy(content, record, trusted):  # the int8 file's outputs with every row's scores turned round
        run = real(content, record, trusted)
        return (lambda x: run(x)[:, ::-1].copy()) if content != float_file[0] else run

    float_file = []
    quantized = formats._quantized
    monkeypatch.setattr(formats, "_quantized", lambda content, facts: (float_file.append(content), quantized(
        content, facts))[1])
    monkeypatch.setitem(formats._RUNNERS, "onnx_int8", lossy)
    with pytest.raises(ExportError, match=r"onnx_int8 file of model=mlp costs \d+\.\d+ points \(accuracy \(%\) "
                                          r".*more than max_accuracy_drop=1; nothing was written"):
        export(str(mlp_run), "onnx_int8")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the older set, whole
    assert not list(mlp_run.glob(".export.export-*"))


def test_the_bound_is_a_number_of_points_and_a_wrong_one_is_refused_in_one_line(mlp_run, tmp_path):
    with pytest.raises(ConfigError, match="max_accuracy_drop=lots is not valid: expected points of accuracy"):
        export(str(mlp_run), "onnx_int8", max_accuracy_drop="lots")
    proc = dltrain_command(str(mlp_run), "format=onnx_int8", "max_accuracy_drop=-1", cwd=tmp_path,
                           script="dltrain-export")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "max_accuracy_drop=-1 is not valid" in proc.stderr
