"""Image folders streamed (data.stream=true): the same tensors and metrics as the in-memory path, augmentation of
training batches only, an unreadable image named or skipped, and every later command on a streamed run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import dltrain_command, only_run_dir, read_results
from datafiles import write_image_folder

SMALL = ["data=image_folder", "data.image_size=[8,8]", "model=cnn", "trainer.max_epochs=1", "data.batch_size=8"]


def three_classes(root: Path, per_class: int = 10) -> Path:
    """JPEGs of three brightness classes, of different sizes (so resizing matters)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for label, base in enumerate((40, 128, 215)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 25, (10 + i % 3, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{label}" / f"{i}.jpg")
    return root


def datamodule(*overrides: str):
    from dltrain.config.compose import load_config
    from dltrain.data.datamodule import build_datamodule

    cfg = load_config([*SMALL, *overrides])
    return build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed)


def test_streamed_and_in_memory_paths_give_the_same_splits_tensors_and_metrics(tmp_path, run):
    folder = three_classes(tmp_path / "images")
    streamed, held = (datamodule(f"data.path={folder}", f"data.stream={s}", "data.num_workers=0")
                      for s in ("true", "false"))
    assert streamed.augments_images and not held.augments_images
    assert streamed.spec == held.spec
    for part in ("train_set", "val_set", "test_set"):
        a, b = getattr(streamed, part), getattr(held, part)
        assert len(a) == len(b) and torch.equal(a.targets, b.targets)
        assert torch.equal(torch.cat([x for x, _ in a.labelled_batches()]), b.features)
    # After training, a split goes through the network in the run's batches (data.batch_size=8), which fit
    # in memory as the training's did, not in larger ones.
    assert [len(y) for _, y in streamed.train_set.labelled_batches()] == [8, 8, 5]  # its 21 rows
    assert any("streamed from its files (data.stream=true" in note for _, note in streamed.notes)
    assert any("held in memory (data.stream=false" in note for _, note in held.notes)

    # The streamed run's test metrics are those of its best checkpoint on the in-memory test split.
    import pytorch_lightning as pl

    from dltrain.checkpoints.reading import read_checkpoint
    from dltrain.training.restore import load_module

    run_dir, results = run([*SMALL, f"data.path={folder}", "data.stream=true", "data.num_workers=0"])
    assert results["data_path"]["streamed"] is True
    module = load_module(read_checkpoint(run_dir / results["best_checkpoint"]))
    tested = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        module, dataloaders=held.test_dataloader(), verbose=False)[0]
    assert tested == pytest.approx(results["test"], rel=1e-5)


def test_augmentation_changes_training_images_and_batches_never_evaluation_ones(tmp_path, run, monkeypatch):
    folder = three_classes(tmp_path / "images")
    keys = ["data.augment.policy=trivial", "data.augment.random_resized_crop=[0.3,1.0]", "data.augment.hflip=true",
            "data.augment.color_jitter=0.4"]
    plain = datamodule(f"data.path={folder}", "data.stream=false")
    for policy in ("trivial", "rand", "auto"):
        augmented = datamodule(f"data.path={folder}", "data.stream=true", *keys, f"data.augment.policy={policy}")
        torch.manual_seed(0)
        draws = [augmented.train_set[0][0] for _ in range(4)]
        assert any(not torch.equal(draws[0], other) for other in draws[1:])
        assert not any(torch.equal(draw, plain.train_set.features[0]) for draw in draws)
        for part in ("val_set", "test_set"):  # read plainly: the in-memory path's very tensors
            assert torch.equal(getattr(augmented, part)[1][0], getattr(plain, part).features[1])

    # MixUp/CutMix: called on training batches only (never under inference mode), soft targets summing to 1.
    import dltrain.training.builders as builders

    seen = []

    def spying(*args):
        mix = real(*args)

        def record(x, y):
            mixed, soft = mix(x, y)
            seen.append((torch.is_inference_mode_enabled(), soft.shape == (len(y), 3), not torch.equal(mixed, x)))
            assert torch.allclose(soft.sum(dim=1), torch.ones(len(y)))
            return mixed, soft
        return record

    real = builders.build_mixing
    monkeypatch.setattr(builders, "build_mixing", spying)
    _, results = run([*SMALL, f"data.path={folder}", "data.stream=true", "data.augment.mixup=0.4",
                      "data.augment.cutmix=1.0", "data.num_workers=0"])
    assert results["status"] == "completed" and seen and all(seen_ == (False, True, True) for seen_ in seen)
    assert len(seen) == -(-len(plain.train_set) // 8)  # one call per training batch of the one epoch


@pytest.mark.slow
def test_an_unreadable_image_mid_folder_is_named_in_one_line_or_skipped_and_counted(tmp_path):
    folder = tmp_path / "images"
    write_image_folder(folder, per_class=12, size=10)
    bad = folder / "dark" / "5.png"
    bad.write_bytes(b"not an image at all")
    args = [*SMALL, f"data.path={folder}", "data.stream=true", "data.num_workers=2"]
    for name in ("error", "skip"):
        (tmp_path / name).mkdir()
    proc = dltrain_command(*args, cwd=tmp_path / "error")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dltrain: error: {bad}: not a readable image") and "data.on_bad_sample=skip" in last
    assert "Traceback" not in proc.stderr

    # Under DDP each rank's skips are counted: three bad images, read by either rank, all in results.json.
    others = [folder / "dark" / "9.png", folder / "light" / "2.png"]
    for file in others:
        file.write_bytes(b"not an image either")
    proc = dltrain_command(*args, "data.on_bad_sample=skip", "trainer=ddp_cpu", "trainer.devices=2",
                           cwd=tmp_path / "skip")
    assert proc.returncode == 0, proc.stderr
    results = read_results(only_run_dir(tmp_path / "skip"))
    assert results["skipped_samples"]["count"] == 3
    assert sorted(results["skipped_samples"]["files"]) == sorted(map(str, [bad, *others]))
    assert "3 unreadable image(s) skipped (data.on_bad_sample=skip; results.json lists them)" in proc.stderr


def test_predict_and_eval_on_a_streamed_run_read_images_as_training_did(tmp_path):
    folder = three_classes(tmp_path / "images")
    proc = dltrain_command(*SMALL, f"data.path={folder}", "data.stream=true", "data.augment.normalize=imagenet",
                           "data.augment.hflip=true", "data.augment.cutmix=1.0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    results = read_results(run_dir)
    proc = dltrain_command(f"ckpt_path={run_dir}", f"input={folder}", "batch_size=4", f"output={tmp_path / 'p.csv'}",
                           cwd=tmp_path, script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "p.csv") as handle:
        predicted = {row["file"]: row for row in csv.DictReader(handle)}
    assert len(predicted) == 30
    # test_predictions.csv (the streamed test split through the training pipeline) agrees with dltrain-predict
    with open(run_dir / "test_predictions.csv") as handle:
        tested = list(csv.DictReader(handle))
    shared = {round(float(row["prob_c0"]), 5) for row in tested}
    assert shared <= {round(float(row["prob_c0"]), 5) for row in predicted.values()}
    proc = dltrain_command(f"ckpt_path={run_dir}", cwd=tmp_path, script="dltrain-eval")
    assert proc.returncode == 0, proc.stderr
    evaluation = json.loads((run_dir / "eval_best.json").read_text())
    assert evaluation["metrics"] == pytest.approx(results["test"], rel=1e-5)
