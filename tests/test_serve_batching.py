"""dltrain-serve's micro-batching, through the real app (httpx's ASGI transport, concurrent requests in one
event loop): concurrent requests' rows go through one forward pass and get exactly the answers each would get
alone; a lone request waits no longer than microbatch_wait_ms; a bad row or request in a batch fails only its
own request, with the usual error."""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import numpy as np
import pytest

from conftest import train_run
from dltrain.inference.app import Settings, create_app, load_served


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve") / "run"
    train_run(run_dir, ["model=mlp", "trainer.max_epochs=1"])
    return run_dir


def rows(count: int) -> list:
    return np.random.default_rng(1).random((count, 1, 8, 8)).round(4).tolist()


def serve(run_dir, monkeypatch=None, **keys):
    """The app with these settings, and the row count of each forward pass it runs."""
    import dltrain.report.predictions as predictions

    passes: list[int] = []
    if monkeypatch is not None:
        real = predictions.output_numbers
        monkeypatch.setattr(predictions, "output_numbers",
                            lambda module, features, size: passes.append(len(features)) or real(module, features, size))
    settings = Settings(str(run_dir), **keys)
    return create_app(load_served(settings), settings), passes


def same(answers: list[dict], alone: list[dict]) -> bool:
    """Row for row the same answer: the class (or error), and each probability to float32's precision (a
    batched matrix product rounds the last bit differently, as dltrain-predict's batches of 1024 do, and the
    calibration's temperature scales that difference with the logits)."""
    return len(answers) == len(alone) and all(
        a.keys() == b.keys() and a["prediction"] == b["prediction"] and a.get("error") == b.get("error")
        and a.get("probabilities", {}).keys() == b.get("probabilities", {}).keys()
        and all(math.isclose(v, b["probabilities"][k], rel_tol=1e-5, abs_tol=1e-7)
                for k, v in a.get("probabilities", {}).items())
        for a, b in zip(answers, alone))


def post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    """The bodies POSTed to /predict at once (each its own request, all in flight together)."""
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
            return await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))
    return asyncio.run(go())


def test_concurrent_requests_share_one_forward_pass_and_get_their_single_request_answers(digits_run, monkeypatch):
    inputs = rows(12)
    alone_app, _ = serve(digits_run, microbatch_rows=0)
    alone = [post_all(alone_app, [{"inputs": [row]}])[0].json() for row in inputs]
    app, passes = serve(digits_run, monkeypatch, microbatch_wait_ms=500)
    bodies = [{"inputs": [row]} for row in inputs[:8]] + [{"inputs": inputs[8:]}]  # eight of one row, one of four
    answers = [answer.json() for answer in post_all(app, bodies)]
    assert passes == [12]  # every request's rows in one pass
    assert same([answer["predictions"][0] for answer in answers[:8]], [answer["predictions"][0] for answer in alone[:8]])
    assert same(answers[8]["predictions"], [answer["predictions"][0] for answer in alone[8:]])


def test_a_lone_request_waits_at_most_the_wait_and_a_full_batch_not_at_all(digits_run, monkeypatch):
    app, passes = serve(digits_run, monkeypatch, microbatch_wait_ms=300)
    post_all(app, [{"inputs": rows(1)}])  # the first request's one-off costs
    started = time.perf_counter()
    post_all(app, [{"inputs": rows(1)}])
    assert 0.3 <= time.perf_counter() - started < 0.3 + 0.5
    app, passes = serve(digits_run, monkeypatch, microbatch_rows=4, microbatch_wait_ms=60_000)
    started = time.perf_counter()
    answers = post_all(app, [{"inputs": [row]} for row in rows(4)] + [{"inputs": rows(6)}])  # 4 rows: full
    assert time.perf_counter() - started < 30 and [a.status_code for a in answers] == [200] * 5
    assert passes == [4, 6]  # a request over microbatch_rows is a pass of its own, never split


def test_a_bad_row_or_request_in_a_batch_fails_only_its_own(digits_run, monkeypatch):
    good = rows(3)
    alone_app, _ = serve(digits_run, microbatch_rows=0)
    alone = [post_all(alone_app, [{"inputs": [row]}])[0].json()["predictions"][0] for row in good]
    app, passes = serve(digits_run, monkeypatch, microbatch_wait_ms=500)
    huge = [[[1e39] * 8] * 8]
    answers = post_all(app, [{"inputs": [good[0]]}, {"inputs": [huge]}, {"inputs": [good[1], huge]},
                             {"inputs": [[[1.0] * 8] * 7]}, {"rows": [{"a": 1}]}, {"inputs": [good[2]]}])
    assert [answer.status_code for answer in answers] == [200, 422, 200, 422, 422, 200]
    assert answers[1].json()["detail"] == ("inputs[0]: holds a value that is not a finite float32 number (NaN, "
                                           "infinite, or beyond about 3.4e38)")
    assert same(answers[2].json()["predictions"],
                [alone[1], {"prediction": None, "error": "inputs[1]: holds a value that is not a finite float32 number "
                                                         "(NaN, infinite, or beyond about 3.4e38)"}])
    assert answers[3].json()["detail"] == "inputs has rows of shape (7, 8), but the checkpoint was trained on (1, 8, 8)"
    assert answers[4].json()["detail"].startswith("rows: this model was trained on image data")
    assert same([answers[0].json()["predictions"][0], answers[5].json()["predictions"][0]], [alone[0], alone[2]])
    assert passes == [3]  # the good rows of three requests in one pass; the refused ones never reached it
