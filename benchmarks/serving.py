"""dltrain-serve under a bounded load: requests per second and latency, beside the forward pass alone.

A digits MLP is trained for a few epochs (or --ckpt names a run), the real server is started on a free port
of 127.0.0.1, and --clients threads, each with its own HTTP connection, send --requests POST /predict
requests of --rows image rows in all. Printed: requests per second, p50 / p99 latency, error responses
(PASS only with none), and as the baseline the same rows' prediction in-process (dltrain.report.predictions, one
forward pass), so what HTTP, JSON and the encoding add is read off beside it.

Run: python benchmarks/serving.py [--requests 2000] [--clients 8] [--rows 1] [--ckpt <run dir>]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def trained_run(folder: Path) -> Path:
    from dltrain.config.compose import load_config
    from dltrain.training.train import train

    run_dir = folder / "run"
    train(load_config(["trainer=cpu", "model=mlp", "trainer.max_epochs=3"]), run_dir)
    return run_dir


def forward_alone(run_dir: Path, rows: list, repeats: int = 500) -> float:
    """Median seconds of the in-process prediction of `rows` (the server's own work, without HTTP)."""
    import numpy as np
    import torch

    from dltrain.training.restore import open_checkpoint
    from dltrain.report.predictions import prediction_table

    module = open_checkpoint(run_dir)[3].eval()
    x = torch.from_numpy(np.asarray(rows, dtype=np.float32))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        prediction_table(module, x, len(rows))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load(url: str, body: dict, requests: int, clients: int) -> tuple[float, list[float], int]:
    """(seconds in all, each request's latency, error responses) of `requests` POSTs from `clients` threads."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    share = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(count: int) -> None:
        with httpx.Client(timeout=30) as session:
            for _ in range(count):
                started = time.perf_counter()
                answer = session.post(f"{url}/predict", json=body)
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    errors[0] += answer.status_code != 200
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1, help="image rows per request")
    parser.add_argument("--ckpt", type=Path, help="a run directory (default: train a digits MLP)")
    args = parser.parse_args()
    import httpx
    import numpy as np

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.ckpt or trained_run(Path(scratch))
        rows = np.random.default_rng(0).random((args.rows, 1, 8, 8)).round(4).tolist()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([str(Path(sys.executable).with_name("dltrain-serve")), f"ckpt_path={run_dir}",
                                   f"port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            load(url, {"inputs": rows}, 50, 2)  # warm-up
            seconds, latencies, errors = load(url, {"inputs": rows}, args.requests, args.clients)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        alone = forward_alone(run_dir, rows)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"dltrain-serve: {args.requests} requests of {args.rows} row(s) from {args.clients} clients in "
          f"{seconds:.1f} s")
    print(f"  throughput {args.requests / seconds:.0f} requests/s; latency p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")
    print(f"  baseline: the same prediction in-process, no HTTP: {alone * 1000:.2f} ms (p50 is {p50 / alone:.1f}x it)")
    print(f"  error responses: {errors} {'PASS' if errors == 0 else 'FAIL'}")


if __name__ == "__main__":
    main()
