"""Image folders at scale: dltrain's streamed path against a hand-written ImageFolder + DataLoader loop.

Generated 256x256 JPEG folders (10 classes; cached under /tmp/dltrain_bench_images), read at 224x224, each
side run three times (--tries) timed and three times with its memory sampled (sampling slows the runs it
watches: see PeakMemory), taking turns:
- streamed peak memory (the process and its DataLoader workers, summed by PSS): flat in the folder's size
  (the largest folder's median at most 1.2x the smallest's) and every try under 2 GB;
- time from launch to the first training step (the median): under 15 s at every size;
- training throughput (the best try of each side): at least 0.95x the hand-written loop's, with the same model,
  workers, batch and transforms;
- the in-memory path's (data.stream=false) memory and first step beside them, where it fits (--in-memory-max).
With --gpu (and at the end of data_scale.py's image part, where CUDA is there): resnet18 on the GPU, streamed with
8 workers, against the hand loop on the GPU (pinned batches), throughput at least 0.95x, and the GPU kept busy:
at most 5% of the steps' time spent waiting for the next batch.

The model is small by default (dltrain's cnn, one block of 8 channels, no hidden layer: 11M multiply-adds an
image), so that reading the images is what is measured, not the CPU's convolutions; --arch resnet18 (or any
torchvision classifier) trains that instead, on both sides.

Run: python benchmarks/data_scale_images.py [--sizes 1000 4000 16000] [--arch cnn|resnet18|...] [--tries 3] [--gpu]
image_lines(...) returns the report's lines (benchmarks/data_scale.py prints them with its own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).parent))
from processes import descendants, pss  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "dltrain_bench_images"
CLASSES = 10
SIDE, SIZE = 256, 224  # generated, read
MEMORY_FLAT, MEMORY_MB, FIRST_STEP_S, THROUGHPUT = 1.2, 2048, 15.0, 0.95
GPU_WAITING = 0.05  # the GPU kept busy: at most this share of the steps' time spent between steps
CLOCK_ENV = "DLTRAIN_BENCH_CLOCK"


def image_folder(count: int) -> Path:
    """A folder of `count` 256x256 JPEGs in CLASSES class folders, generated once and kept in CACHE."""
    from multiprocessing import Pool

    root = CACHE / str(count)
    done = root / ".complete"
    if done.exists():
        return root
    with Pool(min(4, os.cpu_count() or 1)) as pool:
        pool.starmap(_write_image, [(root, i) for i in range(count)], chunksize=64)
    done.touch()
    return root


def _write_image(root: Path, index: int) -> None:
    """A smooth random colour field, tinted by its class, with noise: a JPEG of photo-like size on disk."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    label = index % CLASSES
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    coarse[..., label % 3] = np.clip(coarse[..., label % 3].astype(int) + 25 * (label // 3), 0, 255)
    field = np.asarray(Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    folder = root / f"class_{label}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / f"{index:06d}.jpg", quality=90)


class StepClock(pl.Callback):
    """Writes each training batch's start and end times (time.time()) to the file $DLTRAIN_BENCH_CLOCK, so the
    benchmark reads the first step's moment, the steady throughput of a dltrain run and its waits for data. On a
    GPU a step ends when the device has done its work (as the hand loop's does), not when it was queued."""

    def __init__(self) -> None:
        self.starts, self.ends = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.starts.append(time.time())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        _synchronize(module.device)
        self.ends.append(time.time())

    def on_train_end(self, trainer, module) -> None:
        Path(os.environ[CLOCK_ENV]).write_text(json.dumps({"starts": self.starts, "ends": self.ends}))


def _synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """The peak of the summed proportional set size (PSS: shared pages split among their users) of a process
    and all its descendants, sampled every `every` seconds from /proc.

    Reading a process's PSS walks all its memory mappings under the lock its page faults take, so sampling
    slows the processes measured, and one with more mappings (dltrain's) more (benchmarks/README.md).
    Throughput and the first step are therefore measured in runs of their own (`measured=False`)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(pss(pid) for pid in descendants(self.pid)))
            self._stop.wait(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def finished(process: subprocess.Popen, measured: bool) -> tuple[str | None, str | None, float]:
    """The process's output and errors once it has ended, and its peak memory (PeakMemory; NaN unless
    `measured`)."""
    memory = PeakMemory(process.pid) if measured else None
    out, errors = process.communicate()
    return out, errors, memory.stop() if memory else float("nan")


def dltrain_run(folder: Path, stream: bool, arch: str, steps: int, batch: int, workers: int,
                measured: bool = True, device: str = "cpu") -> dict:
    """One dltrain training run of `steps` batches (on the CPU, or the GPU: device="cuda"): its peak memory
    (where `measured`: see PeakMemory), seconds from launch to the first step, samples a second over the steps
    after the first two, and the share of that time spent between steps (waiting for the next batch)."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = Path(tmp) / "clock.json"
        env = os.environ | {CLOCK_ENV: str(clock), "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        command = [str(Path(sys.executable).with_name("dltrain")), "data=image_folder", f"data.path={folder}",
                   f"data.image_size=[{SIZE},{SIZE}]", f"data.stream={str(stream).lower()}", *model_overrides(arch),
                   f"data.batch_size={batch}", f"data.num_workers={workers}",
                   "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=1",
                   "trainer.limit_test_batches=1", "+callbacks.step_clock._target_=data_scale_images.StepClock",
                   "trainer=gpu" if device == "cuda" else "trainer=cpu"]
        launched = time.time()
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        _, errors, peak = finished(process, measured)
        if process.returncode != 0:
            raise RuntimeError(f"dltrain failed ({process.returncode}): {errors[-2000:]}")
        times = json.loads(clock.read_text())
    return _figures(times, launched, peak, batch)


def model_overrides(arch: str) -> list[str]:
    """dltrain's keys for the benchmark's model: the small cnn, or a torchvision classifier."""
    if arch == "cnn":
        return ["model=cnn", "model.channels=[8]", "model.hidden_sizes=[]", "model.dropout=0.0"]
    return ["model=torchvision", f"model.arch={arch}"]


def network(arch: str):
    """The same network for the hand-written loop."""
    import torchvision

    from dltrain.models.cnn import CNN

    if arch == "cnn":
        return CNN((3, SIZE, SIZE), CLASSES, channels=[8], hidden_sizes=[], dropout=0.0)
    return torchvision.models.get_model(arch, num_classes=CLASSES)


def _figures(times: dict[str, list[float]], launched: float, peak: float, batch: int, warmup: int = 2) -> dict:
    """A run's figures from its steps' start and end times: the first step's moment after the launch; samples a
    second and the share of the time between steps (the loader's wait) from batch `warmup` to the end."""
    starts, ends = times["starts"], times["ends"]
    span = ends[-1] - starts[warmup]
    waits = sum(start - end for end, start in zip(ends[warmup:], starts[warmup + 1:]))
    return {"peak_mb": peak, "first_step_s": starts[0] - launched, "samples_per_s": (len(ends) - warmup) * batch / span,
            "waiting": waits / span, "steps": len(ends)}


def hand_run(folder: Path, arch: str, steps: int, batch: int, workers: int, measured: bool = True,
             device: str = "cpu") -> dict:
    """hand_loop in a process of its own, measured as dltrain_run measures dltrain."""
    command = [sys.executable, __file__, "--hand", str(folder), "--arch", arch, "--steps", str(steps), "--batch",
               str(batch), "--workers", str(workers), "--device", device]
    launched = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _, peak = finished(process, measured)
    times = json.loads(out.strip().splitlines()[-1])
    return _figures(times, launched, peak, batch)


def hand_loop(folder: Path, arch: str, steps: int, batch: int, workers: int,
              device: str = "cpu") -> dict[str, list[float]]:
    """The plain loop: torchvision's ImageFolder and a DataLoader with the same workers and transforms (resize to
    224x224, to [0, 1]), the same network, Adam and cross-entropy; each step's start and end times. On a GPU the
    batches are pinned and copied without blocking, as Lightning does."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    dataset = datasets.ImageFolder(str(folder), transforms.Compose([transforms.Resize((SIZE, SIZE)),
                                                                     transforms.ToTensor()]))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None, pin_memory=device == "cuda")
    model = network(arch).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    starts, ends = [], []
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        starts.append(time.time())
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        _synchronize(device)
        ends.append(time.time())
    return {"starts": starts, "ends": ends}


def one_pair(folder: Path, arch: str, steps: int, batch: int, workers: int, measured: bool,
             device: str = "cpu") -> tuple[dict, dict]:
    """A streamed dltrain run, then the hand loop over as many steps as dltrain took (its training split, 70% of a
    small folder, can end the epoch first)."""
    ours = dltrain_run(folder, True, arch, steps, batch, workers, measured=measured, device=device)
    return ours, hand_run(folder, arch, ours["steps"], batch, workers, measured=measured, device=device)


def paired_runs(folder: Path, arch: str, steps: int, batch: int, workers: int, tries: int) -> tuple[dict, dict]:
    """`tries` streamed dltrain runs and hand loops timed, taking turns, and as many of each with their memory
    sampled (PeakMemory): of each side the best throughput (the try least disturbed on a shared machine), the
    median first step and the median peak memory (the allocator's layout varies from run to run:
    benchmarks/README.md), with every try's peak memory for the report."""
    timed, sampled = [], []
    for _ in range(tries):
        timed.append(one_pair(folder, arch, steps, batch, workers, measured=False))
        sampled.append(one_pair(folder, arch, steps, batch, workers, measured=True))

    def summary(times: list[dict], memory: list[dict]) -> dict:
        peaks = [run["peak_mb"] for run in memory]
        return {"samples_per_s": max(run["samples_per_s"] for run in times),
                "first_step_s": sorted(run["first_step_s"] for run in times)[len(times) // 2],
                "peak_mb": sorted(peaks)[len(peaks) // 2], "peaks_mb": peaks}

    return (summary([ours for ours, _ in timed], [ours for ours, _ in sampled]),
            summary([theirs for _, theirs in timed], [theirs for _, theirs in sampled]))


def image_lines(sizes: list[int], arch: str = "cnn", steps: int = 40, batch: int = 32,
                workers: int = 2, in_memory_max: int = 4000, tries: int = 3, echo=None) -> list[str]:
    """The report: for each size, the streamed run's figures (paired_runs) against their bounds and the hand
    loop, and the in-memory path's beside them; then the memory's flatness across sizes. `echo` (print) is given
    each size's lines as soon as they are measured."""
    from performance import figures_line, ratio_line

    lines, peaks = [f"image folders: {arch}, {SIZE}x{SIZE} from {SIDE}x{SIDE} JPEGs, batch {batch}, {workers} "
                    f"workers, {steps} steps (throughput over the last {steps - 2}); {tries} tries a side, taking "
                    "turns: the best throughput, the median memory and first step",
                    f"{'':38}{'dltrain':>12}{'baseline':>14}{'ratio':>8}"], {}
    shown = 0
    for size in sizes:
        folder = image_folder(size)
        streamed, hand = paired_runs(folder, arch, steps, batch, workers, tries)
        peaks[size] = streamed["peak_mb"]
        lines += [f"{size:,} images, streamed (peak memory of each try: "
                  f"{', '.join(f'{mb:,.0f}' for mb in streamed['peaks_mb'])} MB):",
                  ratio_line("  throughput vs hand ImageFolder loop", streamed["samples_per_s"], hand["samples_per_s"],
                             "samples/s", f">= {THROUGHPUT}",
                             streamed["samples_per_s"] >= THROUGHPUT * hand["samples_per_s"]),
                  ratio_line("  peak memory (largest try) vs 2 GB", max(streamed["peaks_mb"]), MEMORY_MB, "MB",
                             f"<= {MEMORY_MB}", max(streamed["peaks_mb"]) <= MEMORY_MB),
                  ratio_line("  launch to first step vs 15 s", streamed["first_step_s"], FIRST_STEP_S, "s",
                             f"<= {FIRST_STEP_S:g}", streamed["first_step_s"] <= FIRST_STEP_S),
                  figures_line("  first step vs the hand loop's", streamed["first_step_s"], hand["first_step_s"], "s"),
                  figures_line("  peak memory vs the hand loop's", streamed["peak_mb"], hand["peak_mb"], "MB")]
        if size <= in_memory_max:
            held = dltrain_run(folder, False, arch, steps, batch, 0)
            lines += [figures_line("  in memory: peak memory vs streamed", held["peak_mb"], streamed["peak_mb"], "MB"),
                      figures_line("  in memory: first step vs streamed", held["first_step_s"],
                                   streamed["first_step_s"], "s"),
                      figures_line("  in memory: throughput vs streamed", held["samples_per_s"],
                                   streamed["samples_per_s"], "samples/s")]
        else:
            lines.append(f"  in memory: not run (would hold {size * 3 * SIZE * SIZE * 4 / 2**30:.1f} GiB decoded; "
                         f"--in-memory-max {in_memory_max})")
        if echo is not None:
            echo("\n".join(lines[shown:]))
            shown = len(lines)
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        lines.append(ratio_line(f"streamed memory: {large:,} vs {small:,} images", peaks[large], peaks[small], "MB",
                                f"<= {MEMORY_FLAT}", peaks[large] <= MEMORY_FLAT * peaks[small]))
    return lines


def gpu_lines(size: int = 4000, arch: str = "resnet18", steps: int = 60, batch: int = 64, workers: int = 8,
              tries: int = 2, device: str = "cuda") -> list[str]:
    """The GPU line: `arch` trained on the streamed folder on the GPU against the hand loop on the GPU, the same
    workers (best throughput of `tries` each, taking turns), and whether the GPU was kept busy: the share of the
    steps' time spent waiting for the next batch. Left out, saying so, where there is no GPU (device="cpu" runs
    the same lines on the CPU, to try the script where there is none)."""
    import torch

    from performance import ratio_line

    if device == "cuda" and not torch.cuda.is_available():
        return [f"GPU: no CUDA device here, so the {arch} line is left out (it runs where one is: "
                "python benchmarks/data_scale_images.py --gpu)"]
    folder = image_folder(size)
    runs = [one_pair(folder, arch, steps, batch, workers, measured=False, device=device) for _ in range(tries)]
    ours = max((run for run, _ in runs), key=lambda run: run["samples_per_s"])
    theirs = max((run for _, run in runs), key=lambda run: run["samples_per_s"])
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU, trying the script"
    return [f"{name}: {arch}, {size:,} images streamed at {SIZE}x{SIZE}, batch {batch}, {workers} workers, "
            f"{steps} steps; the best of {tries} tries a side",
            ratio_line("  images/s vs the hand loop, same device", ours["samples_per_s"], theirs["samples_per_s"],
                       "samples/s", f">= {THROUGHPUT}", ours["samples_per_s"] >= THROUGHPUT * theirs["samples_per_s"]),
            ratio_line("  share of the time waiting for batches", ours["waiting"], theirs["waiting"], "of steps",
                       f"<= {GPU_WAITING}", ours["waiting"] <= GPU_WAITING)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000], help="images per folder")
    parser.add_argument("--arch", default="cnn", help="cnn (small, the default) or a torchvision classifier "
                        "(resnet18, mobilenet_v3_small, ...)")
    parser.add_argument("--steps", type=int, default=40, help="training steps measured per run (2 warm up)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--in-memory-max", type=int, default=4000, help="largest folder also run in memory")
    parser.add_argument("--tries", type=int, default=3, help="runs of each side per folder, taking turns")
    parser.add_argument("--gpu", action="store_true", help="the GPU line alone: resnet18 (or --arch) on 4,000 "
                        "images, 8 workers (or --workers), against the hand loop on the GPU")
    parser.add_argument("--hand", help=argparse.SUPPRESS)  # run the hand loop on this folder: hand_run's process
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # the hand loop's device
    args = parser.parse_args()
    if args.hand:
        print(json.dumps(hand_loop(Path(args.hand), args.arch, args.steps, args.batch, args.workers, args.device)))
        return
    if args.gpu:
        arch = "resnet18" if args.arch == "cnn" else args.arch
        print("\n".join(gpu_lines(arch=arch, workers=8 if args.workers == 2 else args.workers)))
        return
    lines = image_lines(args.sizes, args.arch, args.steps, args.batch, args.workers, args.in_memory_max,
                        args.tries, echo=lambda text: print(text, flush=True))
    if len(set(args.sizes)) > 1:  # the flatness line, measured once every size was
        print(lines[-1])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
