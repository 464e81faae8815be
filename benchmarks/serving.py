"""dltrain-serve under a bounded load: requests per second and latency, micro-batching off and on, against the
figure before this round's changes, with every answer checked against dltrain-predict's.

A digits MLP is trained for a few epochs (or --ckpt names a run), the real server is started on a free port
of 127.0.0.1, and --clients threads, each with its own HTTP connection, send --requests POST /predict
requests of --rows image rows each (drawn in turn from 64 distinct rows). The server runs twice: with
micro-batching off (microbatch_rows=0: each request its own forward pass) and on (the defaults). Printed
for each: requests per second, p50 / p99 latency, error responses; the ratio of the batched throughput to the
off run and to BEFORE (145 requests/s at p50 54 ms, 8 clients, 2 cores: the server of 2026-12-01, which built a
DataFrame per request), PASS when it is at least 3x BEFORE with p99 under 50 ms; and whether every answer, in
both runs, equals dltrain-predict's on the same rows (the class, and each probability within 1e-5 relative,
float32's rounding: see SAME). Beside them, the same rows' prediction in-process (one forward pass, no HTTP).

Run: python benchmarks/serving.py [--requests 2000] [--clients 8] [--rows 1] [--ckpt <run dir>]
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BEFORE = 145.0  # requests/s, 8 clients, one-row requests, 2 cores (benchmarks/README.md, 2026-12-01)
TARGET_RATIO, TARGET_P99 = 3.0, 0.050


def trained_run(folder: Path) -> Path:
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    run_dir = folder / "run"
    train(load_config(["trainer=cpu", "model=mlp", "trainer.max_epochs=3"]), run_dir)
    return run_dir


def forward_alone(run_dir: Path, rows, repeats: int = 500) -> float:
    """Median seconds of the in-process prediction of `rows` (the server's own work, without HTTP)."""
    import torch

    from dltrain.report.predictions import output_numbers
    from dltrain.training.restore import open_checkpoint

    module = open_checkpoint(run_dir)[3].eval()
    x = torch.from_numpy(rows)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        output_numbers(module, x, len(rows))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load(url: str, bodies: list[dict], requests: int, clients: int) -> tuple[float, list[float], int, dict]:
    """(seconds in all, each request's latency, error responses, {body index: its predictions}) of `requests`
    POSTs from `clients` threads, request i sending bodies[i % len(bodies)]."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    answers: dict[int, list] = {}
    lock = threading.Lock()

    def client(first: int) -> None:
        with httpx.Client(timeout=30) as session:
            for i in range(first, requests, clients):
                body = bodies[i % len(bodies)]
                started = time.perf_counter()
                answer = session.post(f"{url}/predict", json=body)
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    errors[0] += answer.status_code != 200
                    if answer.status_code == 200:
                        answers.setdefault(i % len(bodies), answer.json()["predictions"])
    threads = [threading.Thread(target=client, args=(first,)) for first in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors[0], answers


def served(run_dir: Path, keys: list[str], bodies: list[dict], args) -> tuple[float, float, float, int, dict]:
    """(requests/s, p50, p99, error responses, answers) of the real server started with `keys`."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("dltrain-serve")), f"ckpt_path={run_dir}",
                               f"port={port}", *keys], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        load(url, bodies, 100, args.clients)  # warm-up
        seconds, latencies, errors, answers = load(url, bodies, args.requests, args.clients)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return args.requests / seconds, p50, p99, errors, answers


def largest_difference(answers: dict, predicted, rows: int) -> float:
    """The largest relative difference between a served probability and dltrain-predict's for the same row; inf
    where a class differs or a body went unanswered."""
    worst = 0.0 if len(answers) == len(predicted) // rows else math.inf
    for body, predictions in answers.items():
        for answer, (_, row) in zip(predictions, predicted.iloc[body * rows:(body + 1) * rows].iterrows()):
            if str(answer["prediction"]) != str(row["prediction"]):
                return math.inf
            for name, value in answer["probabilities"].items():
                expected = row[f"prob_{name}"]
                worst = max(worst, abs(value - expected) / max(abs(expected), 1e-7))
    return worst


# Equal within float32's rounding: a forward pass over one row on the server's one thread and over 64 rows on
# dltrain-predict's two sums in another order, a few units in the last place of the logits, which the softmax
# carries into the probabilities (up to about 2e-6 relative, measured); tests/test_serve_batching.py's bound.
SAME = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1, help="image rows per request")
    parser.add_argument("--ckpt", type=Path, help="a run directory (default: train a digits MLP)")
    args = parser.parse_args()
    load_average = Path("/proc/loadavg").read_text().split()[0]  # other work on the machine, before the runs
    import numpy as np
    import pandas as pd

    from dltrain.commands.predict import predict

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.ckpt or trained_run(Path(scratch))
        rows = np.random.default_rng(0).random((64 * args.rows, 1, 8, 8)).round(4).astype(np.float32)
        np.save(Path(scratch) / "rows.npy", rows)
        predicted = pd.read_csv(predict(str(run_dir), str(Path(scratch) / "rows.npy"),
                                        str(Path(scratch) / "predicted.csv")), dtype={"prediction": str})
        bodies = [{"inputs": rows[i * args.rows:(i + 1) * args.rows].tolist()} for i in range(64)]
        runs = {name: served(run_dir, keys, bodies, args)
                for name, keys in (("micro-batching off", ["microbatch_rows=0"]), ("micro-batching on", []))}
        alone = forward_alone(run_dir, rows[:args.rows])
    print(f"dltrain-serve: {args.requests} requests of {args.rows} row(s) from {args.clients} clients "
          f"(load average before the runs: {load_average})")
    differences = {name: largest_difference(run[4], predicted, args.rows) for name, run in runs.items()}
    for name, (throughput, p50, p99, errors, _) in runs.items():
        print(f"  {name:19} {throughput:5.0f} requests/s; latency p50 {p50 * 1000:5.1f} ms, p99 {p99 * 1000:5.1f} ms; "
              f"error responses {errors}; answers equal to dltrain-predict's: "
              f"{'yes' if differences[name] <= SAME else 'NO'} (the classes, and the probabilities within "
              f"{differences[name]:.1e} relative)")
    (off, *_), (on, _, p99, errors, _) = runs.values()
    passed = on >= TARGET_RATIO * BEFORE and p99 < TARGET_P99 and errors == 0 and all(
        difference <= SAME for difference in differences.values())
    print(f"  micro-batching on / off: {on / off:.2f}x; on / before ({BEFORE:.0f} requests/s, p50 54 ms): "
          f"{on / BEFORE:.2f}x (target >= {TARGET_RATIO:g}x with p99 < {TARGET_P99 * 1000:.0f} ms): "
          f"{'PASS' if passed else 'FAIL'}")
    print(f"  the same prediction in-process, no HTTP: {alone * 1000:.2f} ms")


if __name__ == "__main__":
    main()
