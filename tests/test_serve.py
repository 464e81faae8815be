"""dltrain-serve: the real server (uvicorn on 127.0.0.1, a free port) answers what dltrain-predict gives for the
same inputs, refuses bad requests with a 4xx JSON error naming the field, and goes on serving."""

from __future__ import annotations

import base64
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import dltrain_command, free_port
from datafiles import write_image_folder, write_table
from dltrain.checkpoints.reading import read_checkpoint
from dltrain.data.spec import DataSpec
from dltrain.inference.preprocessing import describe


class Server:
    """`dltrain-serve` started as a user starts it, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, cwd: Path, *keys: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(Path(sys.executable).with_name("dltrain-serve")), *keys, f"port={self.port}"],
                                     cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json() == {"status": "ok"}:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the server did not answer /health")

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


def same_as_predict(answers: list[dict], predicted: pd.DataFrame) -> None:
    """The server's answers equal dltrain-predict's CSV rows: the class and every probability, or the value."""
    assert len(answers) == len(predicted)
    probabilities = [c for c in predicted.columns if c.startswith("prob_")]
    for answer, (_, row) in zip(answers, predicted.iterrows()):
        if probabilities:
            assert str(answer["prediction"]) == str(row["prediction"])
            assert sorted(answer["probabilities"]) == sorted(c[len("prob_"):] for c in probabilities)
            for column in probabilities:
                got = answer["probabilities"][column[len("prob_"):]]
                assert math.isclose(got, row[column], rel_tol=1e-6, abs_tol=1e-7)
        else:
            assert math.isclose(answer["prediction"], row["prediction"], rel_tol=1e-6)


def test_a_table_server_answers_as_dltrain_predict_refuses_bad_requests_and_goes_on_serving(run, tmp_path):
    write_table(tmp_path / "train.csv")
    run_dir, results = run(["data=csv", f"data.path={tmp_path / 'train.csv'}", "data.target=label",
                            "data.missing=impute"])
    new = pd.read_csv(tmp_path / "train.csv").drop(columns="label")[:30]
    new.to_csv(tmp_path / "new.csv", index=False)
    proc = dltrain_command(f"ckpt_path={run_dir}", "input=new.csv", cwd=tmp_path, script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    predicted = pd.read_csv(run_dir / "predictions_new.csv")
    rows = json.loads(new.to_json(orient="records"))  # the empty cell is null
    assert any(value is None for row in rows for value in row.values())

    server = Server(tmp_path, f"ckpt_path={run_dir}", "max_batch_rows=40", "max_body_mb=0.01")
    try:
        answer = httpx.post(f"{server.url}/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        same_as_predict(answer.json()["predictions"], predicted)
        meta = httpx.get(f"{server.url}/metadata").json()
        stored = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")["hyper_parameters"]
        assert meta["model"] == "mlp" and meta["task"] == "binary" and meta["classes"] == ["big", "small"]
        assert meta["test_metrics"] == results["test"]
        assert meta["epoch"] == results["best_epoch"]  # counted from 1, as results.json and the terminal count
        expected = describe(DataSpec.from_dict(stored["data_spec"]), stored["config"])
        assert meta["inputs"] == json.loads(json.dumps(expected))
        row = rows[0]
        bad = [  # (request, status, the detail's words)
            ({"json": {"rows": [{k: v for k, v in row.items() if k != "size"}]}}, 422,
             "rows: missing columns size (the model was trained on them)"),
            ({"json": {"rows": [row | {"size": "tall"}]}}, 422,
             "rows[0]: column 'size' value 'tall' is not a number, and the column is numeric"),
            ({"json": {"rows": [row | {"colour": ["red"]}]}}, 422, "rows[0].colour: a list is not a table value"),
            ({"json": {"rows": [[1, 2, 3]]}}, 422, "rows[0]: expected an object of column -> value, got list"),
            ({"json": {"rows": [row] * 41}}, 413, "rows: 41 rows, over max_batch_rows=40; split the batch"),
            ({"json": {"rows": [row | {"colour": "x" * 20000}]}}, 413, "body: over max_body_mb=0.01 MB"),
            ({"content": b'{"rows": [', "headers": {"content-type": "application/json"}}, 400, "body: not valid JSON"),
            ({"content": b'{"rows": [{"size": NaN}]}', "headers": {"content-type": "application/json"}}, 400,
             "NaN is not a JSON number"),
            ({"json": {"rowz": [row]}}, 422, "body: expected one field, rows (a table), inputs (nested lists) or "
                                             "images (base64 files), got rowz"),
            ({"json": {"rows": []}}, 422, "rows: expected a non-empty list, one entry per row"),
            ({"json": {"images": ["aGVsbG8="]}}, 422, "images[0]: images were sent, but the model was trained on "
                                                      "table data"),
            ({"content": b"size=3", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415,
             "expected application/json"),
        ]
        for request, status, words in bad:
            answer = httpx.post(f"{server.url}/predict", **request)
            assert answer.status_code == status and words in answer.json()["detail"], (request, answer.text)
        same_as_predict(httpx.post(f"{server.url}/predict", json={"rows": rows}).json()["predictions"], predicted)
        assert httpx.get(f"{server.url}/docs").status_code == 200
        assert "/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    finally:
        code, out, err = server.stop()
    assert code == 0 and "Traceback" not in out + err, err[-2000:]
    assert ("micro-batching: concurrent requests' rows gathered into one forward pass of at most 256 rows, a "
            "request waiting at most 2 ms for others (microbatch_rows, microbatch_wait_ms)") in out.splitlines()


@pytest.mark.slow
def test_an_image_server_reads_base64_and_multipart_files_as_dltrain_predict_reads_the_folder(run, tmp_path):
    write_image_folder(tmp_path / "images")
    run_dir, _ = run(["data=image_folder", f"data.path={tmp_path / 'images'}", "data.image_size=[8,8]", "model=cnn",
                      "data.val_fraction=0.25", "data.test_fraction=0.25"])
    proc = dltrain_command(f"ckpt_path={run_dir}", f"input={tmp_path / 'images'}", cwd=tmp_path,
                           script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    predicted = pd.read_csv(run_dir / "predictions_images.csv")
    files = [Path(f) for f in predicted.file]
    server = Server(tmp_path, f"ckpt_path={run_dir}", "workers=2")  # two worker processes, one port
    try:
        encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
        answer = httpx.post(f"{server.url}/predict", json={"images": encoded})
        assert answer.status_code == 200, answer.text
        same_as_predict(answer.json()["predictions"], predicted)
        uploads = [("files", (f.name, f.read_bytes(), "image/png")) for f in files]
        answer = httpx.post(f"{server.url}/predict", files=uploads)
        assert answer.status_code == 200, answer.text
        same_as_predict(answer.json()["predictions"], predicted)
        broken = base64.b64encode(b"not a png").decode()
        answer = httpx.post(f"{server.url}/predict", json={"images": [encoded[0], broken]})
        assert answer.status_code == 422 and answer.json()["detail"].startswith("images[1]: not a readable image")
        answer = httpx.post(f"{server.url}/predict", files=[("files", ("notes.txt", b"hello", "text/plain"))])
        assert answer.status_code == 422 and answer.json()["detail"].startswith("notes.txt: not a readable image")
        answer = httpx.post(f"{server.url}/predict", json={"images": ["%%%"]})
        assert answer.status_code == 422 and answer.json()["detail"] == "images[0]: not valid base64"
        assert httpx.post(f"{server.url}/predict", json={"images": encoded[:1]}).status_code == 200
    finally:
        code, out, err = server.stop()
    assert code == 0 and "Traceback" not in out + err, err[-2000:]


def test_a_sequence_regression_answers_in_the_target_units_as_dltrain_predict(run, tmp_path):
    """In-process (FastAPI's TestClient): nested-list inputs, and values in the target's units."""
    from fastapi.testclient import TestClient

    from dltrain.commands.predict import predict
    from dltrain.inference.app import Settings, create_app, load_served

    run_dir, _ = run(["data=sine", "model=lstm", "trainer.max_epochs=1"])
    x = np.random.default_rng(0).normal(size=(6, 20, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    predicted = pd.read_csv(predict(str(run_dir), str(tmp_path / "x.npy")))
    settings = Settings(str(run_dir), max_batch_rows=6)
    client = TestClient(create_app(load_served(settings), settings))
    answer = client.post("/predict", json={"inputs": x.tolist()})
    assert answer.status_code == 200, answer.text
    same_as_predict(answer.json()["predictions"], predicted)
    assert client.post("/predict", json={"inputs": x[:, :5].tolist()}).json()["detail"] == (
        "inputs has rows of shape (5, 1), but the checkpoint was trained on (20, 1)")
    assert client.post("/predict", json={"inputs": [[[1.0]] * 20, [[1.0]] * 19]}).status_code == 422
    assert client.post("/predict", json={"inputs": x.tolist() + x[:1].tolist()}).status_code == 413


@pytest.mark.parametrize("keys, message", [
    (["ckpt_path=run", "port=http"], "port=http is not valid: expected a whole number >= 1"),
    (["ckpt_path=run", "port=70000"], "port=70000 is not valid: expected a port number from 1 to 65535"),
    (["ckpt_path=run", "workers=0"], "workers=0 is not valid: expected a whole number >= 1"),
    (["ckpt_path=run", "max_body_mb=-1"], "max_body_mb=-1 is not valid: expected a number of megabytes > 0"),
    (["ckpt_path=run", "microbatch_rows=-1"], "microbatch_rows=-1 is not valid: expected a whole number >= 0"),
    (["ckpt_path=run", "threads=0"], "threads=0 is not valid: expected a whole number >= 1"),
    (["ckpt_path=run", "microbatch_wait_ms=soon"],
     "microbatch_wait_ms=soon is not valid: expected a number of milliseconds >= 0"),
    (["run"], "no checkpoint at run"),
])
def test_serve_refuses_a_bad_key_or_checkpoint_in_one_line_before_starting(tmp_path, keys, message):
    proc = dltrain_command(*keys, cwd=tmp_path, script="dltrain-serve")
    assert proc.returncode == 1 and proc.stderr.strip() == f"dltrain-serve: error: {message}"
    assert proc.stdout == ""


def test_serve_predicts_the_rows_it_can_and_answers_4xx_naming_the_field_for_what_crashed_it(run, tmp_path):
    """In-process: a row that breaks training's rules (data.missing=drop here) gets its error beside the others'
    predictions (200), as dltrain-predict leaves it out of a file; a request with no predictable row is a 422;
    JSON numbers beyond float range, inputs sent to a table model, deep nesting, a lone surrogate: 4xx, not 500."""
    from fastapi.testclient import TestClient

    from dltrain.inference.app import Settings, create_app, load_served

    write_table(tmp_path / "train.csv")
    run_dir, _ = run(["data=csv", f"data.path={tmp_path / 'train.csv'}", "data.target=label", "data.missing=drop"])
    settings = Settings(str(run_dir))
    client = TestClient(create_app(load_served(settings), settings), raise_server_exceptions=False)
    row = {"size": 10.0, "colour": "red", "noise": 0.1}
    alone = client.post("/predict", json={"rows": [row]}).json()["predictions"][0]

    def post(body: bytes):
        return client.post("/predict", content=body, headers={"content-type": "application/json"})

    empty = client.post("/predict", json={"rows": [row | {"noise": None}, row, row | {"size": "x"}]})
    assert empty.status_code == 200, empty.text
    answers = empty.json()
    assert answers["predictions"][1] == alone
    assert answers["predictions"][0] == {"prediction": None, "error": answers["errors"][0]}
    assert answers["errors"] == [
        "rows[0]: column 'noise' is empty, and the model was trained with data.missing=drop (rows with a missing "
        "value left out): fill it in", "rows[2]: column 'size' value 'x' is not a number, and the column is numeric"]
    beyond = b', "colour": "red", "noise": 0.1}'
    for size in (b"1e999", b"1" + b"0" * 400, b"1e308", b"-1e39"):
        answer = post(b'{"rows": [{"size": ' + size + beyond + b", " + json.dumps(row).encode() + b"]}")
        assert answer.status_code == 200 and answer.json()["predictions"][1] == alone, answer.text
        assert answer.json()["errors"] == ["rows[0]: column 'size' is a number beyond float32's range (about 3.4e38)"]
    bad = [  # (body, status, detail)
        (json.dumps({"rows": [row | {"noise": None}]}).encode(), 422,
         "rows[0]: column 'noise' is empty, and the model was trained with data.missing=drop (rows with a missing "
         "value left out): fill it in"),
        (json.dumps({"rows": [row | {"noise": None}] * 2}).encode(), 422,
         "rows: no row can be predicted; 2 row(s) not predicted (column 'noise' is empty, and the model was trained "
         "with data.missing=drop (rows with a missing value left out): fill it in): rows[0], rows[1]"),
        (json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0, 5.0]]}).encode(), 422,
         'inputs: this model was trained on table data; it takes JSON {"rows": [{"<column>": <value>, ...}, ...]}'),
        (b'{"rows": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400,
         "body: JSON nested too deeply; a request is one object of rows, inputs or images"),
        (b'{"rows": [{"size": 1, "colour": "\\ud800", "noise": 0.1}]}', 422,
         "rows[0].colour: holds a lone UTF-16 surrogate, which is not a Unicode character; send valid text"),
        (b'{"rows": [{"size": 1, "colour": "red", "noise": 0.1, "\\udfff": 1}]}', 422,
         "rows[0].\\udfff: holds a lone UTF-16 surrogate, which is not a Unicode character; send valid text"),
        (json.dumps({"rows": [row | {"size": True}]}).encode(), 422,
         "rows[0].size: a bool is not a table value; expected a number, text or null"),
        (b'{"rows": [{"size": Infinity, "colour": "red", "noise": 0.1}]}', 400,
         "body: not valid JSON (Infinity is not a JSON number; send finite numbers)"),
    ]
    for body, status, detail in bad:
        answer = post(body)
        assert (answer.status_code, answer.json()["detail"]) == (status, detail), answer.text
    assert client.post("/predict", json={"rows": [row]}).json()["predictions"][0] == alone  # still serving


def test_serve_refuses_an_array_row_beyond_float32_and_predicts_the_others(run):
    from fastapi.testclient import TestClient

    from dltrain.inference.app import Settings, create_app, load_served

    run_dir, _ = run(["data=sine", "model=lstm", "trainer.max_epochs=1"])
    settings = Settings(str(run_dir))
    client = TestClient(create_app(load_served(settings), settings), raise_server_exceptions=False)
    good = np.random.default_rng(0).normal(size=(20, 1)).round(3).tolist()
    alone = client.post("/predict", json={"inputs": [good]}).json()["predictions"][0]
    for huge in ("1e39", "1" + "0" * 400):
        body = '{"inputs": [' + json.dumps(good).replace(str(good[3][0]), huge, 1) + ", " + json.dumps(good) + "]}"
        answer = client.post("/predict", content=body.encode(), headers={"content-type": "application/json"})
        assert answer.status_code == 200 and answer.json()["predictions"][1] == alone, answer.text
        assert answer.json()["errors"][0].startswith("inputs[0]: holds a ")
