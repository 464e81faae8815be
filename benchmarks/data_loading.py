"""Data benchmarks, each printed as a ratio against a baseline measured in the same command.

(Training throughput against a plain loop: performance.py.)

1. Batch serving alone: dltrain's whole-tensor batches against torch's TensorDataset with per-sample collate;
   and a batch's gather, torch.index_select (dltrain's) against advanced indexing (features[index]), on idle
   cores and with a busy process on each core (a machine shared with other jobs).
2. Loading a generated 1,000,000 x 20 CSV: dltrain's table reader and encoder against
   pandas.read_csv(engine="pyarrow"), and peak memory against the size of the float32 data.

Run: python benchmarks/data_loading.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serving_times(rows: int, features: int, batch_size: int = 256) -> tuple[float, float]:
    """Seconds to serve one shuffled epoch of batches: dltrain's loader against TensorDataset + default collate."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dltrain.data.batches import TensorBatchDataset, keep_batch

    x, y = torch.randn(rows, features), torch.randint(0, 2, (rows,))

    def epoch(loader) -> float:
        started = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - started

    ours = epoch(DataLoader(TensorBatchDataset(x, y), batch_size=batch_size, shuffle=True, collate_fn=keep_batch))
    theirs = epoch(DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True))
    return ours, theirs


def gather_times(rows: int, features: int, batch_size: int = 256) -> tuple[float, float]:
    """Seconds to gather one shuffled epoch of batches: torch.index_select against features[index]."""
    import torch

    x = torch.randn(rows, features)
    batches = torch.randperm(rows).split(batch_size)

    def epoch(gather) -> float:
        started = time.perf_counter()
        for index in batches:
            gather(index)
        return time.perf_counter() - started
    return (min(epoch(lambda index: torch.index_select(x, 0, index)) for _ in range(3)),
            min(epoch(lambda index: x[index]) for _ in range(3)))


def busy_cores() -> list[subprocess.Popen]:
    """A process spinning on each core, the load another job puts on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]


def load_in_subprocess(path: str, how: str) -> dict:
    """Time and peak memory (above the interpreter with its imports) of one way of loading the CSV."""
    code = f"""
import json, resource, time
import pandas as pd
from dltrain.data.tables import table
from dltrain.data.encoding import TableEncoder
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if {how!r} == "pandas":
    frame = pd.read_csv({path!r}, engine="pyarrow")
else:
    data = table({path!r}, "target", task="regression")
    features = TableEncoder.fit(data.features).transform(data.features)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "peak_mb": (peak - base) / 1024}}))
"""
    return json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV")
    parser.add_argument("--train-rows", type=int, default=200_000, help="rows of the served table")
    args = parser.parse_args()

    ours, theirs = serving_times(args.train_rows, 20)
    print(f"serving one epoch of batches: dltrain {ours:.3f}s  TensorDataset+collate {theirs:.3f}s  "
          f"ratio {ours / theirs:.2f}")
    for load in ("idle cores", "a busy process on each core"):
        spinning = busy_cores() if load != "idle cores" else []
        try:
            ours, theirs = gather_times(args.train_rows, 20)
        finally:
            for process in spinning:
                process.kill()
        print(f"gathering one epoch of batches, {load}: index_select {ours:.3f}s  features[index] {theirs:.3f}s  "
              f"ratio {ours / theirs:.2f}")

    import numpy as np
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "big.csv")
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(rng.normal(size=(args.rows, 20)).astype(np.float32), columns=[f"f{i}" for i in range(20)])
        frame["target"] = rng.normal(size=args.rows)
        frame.to_csv(path, index=False, float_format="%.6g")
        del frame
        baseline = load_in_subprocess(path, "pandas")
        ours = load_in_subprocess(path, "dltrain")
    data_mb = args.rows * 20 * 4 / 2**20
    print(f"load {args.rows:,} x 20 CSV: dltrain {ours['seconds']:.2f}s  pandas(pyarrow) {baseline['seconds']:.2f}s  "
          f"ratio {ours['seconds'] / baseline['seconds']:.2f}")
    print(f"peak memory: dltrain {ours['peak_mb']:.0f} MB = {ours['peak_mb'] / data_mb:.1f}x the float32 data "
          f"({data_mb:.0f} MB); pandas alone {baseline['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
