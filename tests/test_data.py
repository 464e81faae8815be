"""Data sets: embedded, torchvision files, the user's tables, images and arrays, augmentation, and bad data."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import dltrain_command, read_metrics
from datafiles import write_cifar10, write_image_folder, write_mnist, write_table
from dltrain.data.batches import TensorBatchDataset, TensorBatchSampler
from dltrain.data.datamodule import build_datamodule
from dltrain.data.splits import split_rows
from dltrain.errors import DataError


def datamodule(*overrides: str):
    from omegaconf import OmegaConf

    from dltrain.config.compose import load_config

    cfg = load_config(list(overrides))
    return build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed)


@pytest.mark.parametrize(
    "data, model, task, shape",
    [("wine", "mlp", "multiclass", (13,)), ("iris", "softmax", "multiclass", (4,)),
     ("breast_cancer", "logistic", "binary", (30,)), ("diabetes", "linear", "regression", (10,)),
     ("sine", "lstm", "regression", (20, 1)), ("digits", "gru", "multiclass", (1, 8, 8))],
)
def test_embedded_sets_work_as_typed(run, data, model, task, shape):
    run_dir, results = run([f"data={data}", f"model={model}"])
    assert results["task"] == task and results["status"] == "completed"
    assert datamodule(f"data={data}").spec.input_shape == shape


def test_linear_regression_recovers_the_synthetic_relation(run):
    _, results = run(["data=linear", "model=linear", "trainer.max_epochs=15", "optimizer.lr=0.05"])
    assert results["test"]["test_r2"] > 0.99


def test_sine_frequency_target_is_binary_classification(run):
    _, results = run(["data=sine", "data.target=frequency", "model=gru", "trainer.max_epochs=3"])
    assert results["task"] == "binary" and "test_auroc" in results["test"]


def test_splits_are_stratified_seeded_and_disjoint():
    first, second = datamodule(), datamodule()
    assert torch.equal(first.train_set.targets, second.train_set.targets)
    counts = torch.bincount(first.test_set.targets)
    assert counts.min() >= 35 and counts.max() <= 37  # 360 test rows, ~36 per digit
    assert len(first.train_set) + len(first.val_set) + len(first.test_set) == 1797
    other = datamodule("seed=3")
    assert not torch.equal(first.train_set.features, other.train_set.features)


def test_batches_are_slices_of_whole_tensors():
    dataset = TensorBatchDataset(torch.arange(10.0)[:, None], torch.arange(10))
    dataset.__getitem__ = None  # a per-sample call would now fail
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=lambda b: b)
    x, y = next(iter(loader))
    assert torch.equal(y, torch.arange(4)) and x.shape == (4, 1)


def test_a_batch_gathered_with_index_select_holds_the_rows_indexing_gives():
    features, targets = torch.randn(50, 3, 2), torch.randint(0, 5, (50,))
    index = [7, 0, 49, 7, 12]
    x, y = TensorBatchDataset(features, targets).__getitems__(index)
    assert torch.equal(x, features[index]) and torch.equal(y, targets[index])


@pytest.mark.parametrize("make_sampler", [
    lambda rows: torch.utils.data.RandomSampler(rows),
    lambda rows: torch.utils.data.SequentialSampler(rows),
    lambda rows: torch.utils.data.DistributedSampler(rows, num_replicas=3, rank=1, shuffle=True, seed=5),
])
@pytest.mark.parametrize("drop_last", [False, True])
def test_tensor_batches_are_those_of_torchs_batch_sampler(make_sampler, drop_last):
    """Same batches in the same order as torch's BatchSampler over the same sampler (a random order from the
    same draw of the global generator, which is left where BatchSampler leaves it), as tensors."""
    rows = range(103)
    torch.manual_seed(0)
    expected = [torch.tensor(batch) for batch in torch.utils.data.BatchSampler(make_sampler(rows), 10, drop_last)]
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    sampler = TensorBatchSampler(make_sampler(rows), 10, drop_last)
    batches = list(sampler)
    assert torch.rand(1) == expected_next
    assert len(batches) == len(expected) == len(sampler)
    assert all(torch.equal(got, want) for got, want in zip(batches, expected))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_files_are_read_by_torchvision_and_keep_their_test_split(run, tmp_path, name, folder):
    write_mnist(tmp_path / "data", folder)
    module = datamodule(f"data={name}", f"data.root={tmp_path / 'data'}")
    assert module.spec.input_shape == (1, 28, 28) and module.spec.num_classes == 10
    assert len(module.test_set) == 40 and len(module.train_set) + len(module.val_set) == 120
    assert module.train_set.features.max() == 1.0
    _, results = run([f"data={name}", f"data.root={tmp_path / 'data'}", "model=cnn", "data.batch_size=32"])
    assert results["data"] == name


def test_cifar10_batches_are_read_as_torchvision_reads_them_without_unpickling_code(tmp_path, monkeypatch):
    import os

    from torchvision.datasets import CIFAR10, cifar

    write_cifar10(tmp_path)
    module = datamodule("data=cifar10", f"data.root={tmp_path}")
    assert module.spec.input_shape == (3, 32, 32) and len(module.test_set) == 20
    assert module.spec.class_names[0] == "class0"
    # torchvision's own reader (which unpickles anything) sees the same images and labels; it checks the
    # official files' MD5 sums, which generated files cannot match: here it checks only that each file exists.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    theirs = CIFAR10(str(tmp_path), train=False)
    expected = torch.from_numpy(theirs.data.transpose(0, 3, 1, 2) / np.float32(255))
    assert torch.equal(module.test_set.features, expected.float())
    assert module.test_set.targets.tolist() == theirs.targets


def test_missing_torchvision_files_say_where_and_how(tmp_path):
    proc = dltrain_command("data=mnist", f"data.root={tmp_path}/nowhere", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"dltrain: error: data=mnist: files not found in {tmp_path}/nowhere/MNIST/raw; set data.download=true "
        f"to fetch them, or put the files from http://yann.lecun.com/exdb/mnist/ there (data.root={tmp_path}/nowhere)"
    )


def test_csv_table_encodes_with_training_statistics_and_keeps_the_encoding(run, tmp_path):
    path = tmp_path / "table.csv"
    write_table(path)
    module = datamodule("data=csv", f"data.path={path}", "data.target=label")
    spec = module.spec
    assert spec.task == "binary" and spec.class_names == ["big", "small"]
    columns = {c["name"]: c for c in spec.encoder["columns"]}
    assert columns["colour"]["categories"] == ["blue", "green", "red"]
    assert spec.input_shape == (5,)  # size, 3 one-hot colours, noise
    frame = pd.read_csv(path).dropna().reset_index(drop=True)
    from dltrain.data.tables import table

    train, _, _ = split_rows(table(str(path), "label"), 0.1, 0.2, 42)
    assert columns["size"]["mean"] == pytest.approx(frame["size"].iloc[train].mean())
    assert len(frame) == 299  # the row with a missing value was dropped

    run_dir, results = run(["data=csv", f"data.path={path}", "data.target=label", "model=mlp", "trainer.max_epochs=5"])
    saved = torch.load(run_dir / results["best_checkpoint"], weights_only=True)["hyper_parameters"]["data_spec"]
    assert saved["encoder"] == spec.encoder and saved["class_names"] == ["big", "small"]
    assert results["test"]["test_acc"] > 0.8


def test_what_the_encoding_inferred_is_said_and_an_identifier_like_text_column_is_warned_of(tmp_path):
    path = tmp_path / "table.csv"
    write_table(path)
    frame = pd.read_csv(path)
    frame["name"] = [f"item {i}" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    module = datamodule("data=csv", f"data.path={path}", "data.target=label")
    train_rows = len(module.train_set)  # every training row has its own name
    path_line, *notes = module.notes  # shown by the run once every check has passed (test_faults: one-line mistakes)
    assert path_line[0] == logging.INFO and path_line[1].startswith(f"{path}: held in memory: ")
    assert notes == [
        (logging.INFO, "dropped 1 of 300 rows with a missing value (data.missing=drop), before the split is drawn"),
        (logging.INFO, "2 numeric column(s) standardized with the training split's mean and std: size, noise"),
        (logging.INFO, "text column 'colour': 3 categories, one-hot encoded into 3 inputs"),
        (logging.WARNING, f"column 'name' has {train_rows} distinct values in {train_rows} training rows, one-hot "
                          f"encoded into {train_rows} inputs: if it is an identifier or free text, leave it out "
                          "with data.features=[...]"),
    ]
    assert module.spec.input_shape == (5 + train_rows,)


def test_impute_keeps_rows_with_missing_values(tmp_path):
    path = tmp_path / "table.csv"
    write_table(path)
    module = datamodule("data=csv", f"data.path={path}", "data.target=label", "data.missing=impute")
    assert len(module.train_set) + len(module.val_set) + len(module.test_set) == 300
    assert torch.isfinite(module.train_set.features).all()


def test_a_split_column_and_separate_files_fix_the_split(tmp_path):
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.arange(100.0) * 2, "part": ["train"] * 70 + ["val"] * 10 + ["test"] * 20})
    frame.to_csv(tmp_path / "all.csv", index=False)
    module = datamodule("data=csv", f"data.path={tmp_path / 'all.csv'}", "data.target=y", "data.split_column=part")
    assert (len(module.train_set), len(module.val_set), len(module.test_set)) == (70, 10, 20)
    assert module.spec.task == "regression" and module.spec.input_shape == (1,)
    frame[frame.part == "train"].drop(columns="part").to_parquet(tmp_path / "train.parquet")
    frame[frame.part == "test"].drop(columns="part").to_csv(tmp_path / "test.csv", index=False)
    module = datamodule("data=parquet", f"data.path={tmp_path / 'train.parquet'}", "data.target=y",
                        f"data.test_path={tmp_path / 'test.csv'}")
    assert len(module.test_set) == 20 and len(module.train_set) + len(module.val_set) == 70


def test_image_folder_trains_a_cnn(run, tmp_path):
    write_image_folder(tmp_path / "images")
    module = datamodule("data=image_folder", f"data.path={tmp_path / 'images'}", "data.image_size=[8,8]")
    assert module.spec.input_shape == (3, 8, 8) and module.spec.class_names == ["dark", "light"]
    _, results = run(["data=image_folder", f"data.path={tmp_path / 'images'}", "data.image_size=[8,8]", "model=cnn",
                      "data.val_fraction=0.25", "data.test_fraction=0.25"])
    assert results["task"] == "binary"


def test_arrays_npz_and_npy_pair(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 6, 2)), rng.integers(0, 3, 80)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    module = datamodule("data=arrays", f"data.path={tmp_path / 'data.npz'}")
    assert module.spec.kind == "sequence" and module.spec.task == "multiclass" and module.spec.input_shape == (6, 2)
    np.save(tmp_path / "x.npy", x[:, :, 0])
    np.save(tmp_path / "y.npy", y.astype(float) + 0.5)
    module = datamodule("data=arrays", f"data.path={tmp_path / 'x.npy'}", f"data.targets_path={tmp_path / 'y.npy'}",
                        "data.task=regression")
    assert module.spec.kind == "table" and module.spec.task == "regression"


@pytest.mark.slow
def test_augmentation_changes_training_batches_only(run):
    from dltrain.data.augment import build_augmentation

    augment = build_augmentation({"hflip": True, "crop_padding": 1, "noise": 0.1}, "image", (1, 8, 8))
    batch = torch.rand(32, 1, 8, 8)
    assert augment(batch).shape == batch.shape and not torch.equal(augment(batch), batch)
    assert build_augmentation({"hflip": False, "noise": 0.0}, "image", (1, 8, 8)) is None
    with pytest.raises(Exception, match="apply to images"):
        build_augmentation({"hflip": True}, "table", (4,))

    # Training sees noisy batches (its loss differs from a clean run's), the test split the clean rows (its
    # loss is the best checkpoint's on the plain test tensors).
    from dltrain.checkpoints.reading import read_checkpoint
    from dltrain.training.restore import load_module

    noisy_dir, noisy = run(["model=mlp", "data.augment.noise=0.5"])
    clean_dir, _ = run(["model=mlp"])
    assert read_metrics(noisy_dir)[0]["train_loss"] != pytest.approx(read_metrics(clean_dir)[0]["train_loss"], abs=1e-3)
    module = load_module(read_checkpoint(noisy_dir / noisy["best_checkpoint"])).eval()
    test_set = datamodule().test_set
    with torch.no_grad():
        clean_loss = torch.nn.functional.cross_entropy(module(test_set.features), test_set.targets).item()
    assert noisy["test"]["test_loss"] == pytest.approx(clean_loss, rel=1e-5)
    _, results = run(["data.augment.hflip=true", "data.augment.rotation=10", "data.augment.crop_padding=1"])
    assert results["status"] == "completed"


def test_a_model_that_cannot_take_the_data_fails_before_training(tmp_path):
    proc = dltrain_command("data=wine", "model=cnn", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("dltrain: error: model=cnn takes image input, but data=wine is a table; "
                                   "models that fit it: gru, lstm, mlp, rnn, softmax, transformer")


def _bad_csv(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "content, overrides, message",
    [
        (None, ["data.target=y"], "data.path: no such file or folder {path}"),
        ("", ["data.target=y"], "{path}: the file is empty"),
        ("a,y\n1,0\n2,1\n", ["data.target=label"], "{path}: no target column 'label'; the columns are: a, y"),
        ("a,y\n1,0\n2,1\nthree,0\n4,1\n5,0\n", ["data.target=y"], "{path} line 4: column 'a' is numeric but holds 'three'"),
        ("a,y\n" + "".join(f"{i * 2},{'x' if i else 'rare'}\n" for i in range(30)), ["data.target=y"],
         "class 'rare' has 1 row(s) left for training"),
    ],
)
def test_bad_tables_give_one_line_naming_the_file(tmp_path, content, overrides, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    proc = dltrain_command("data=csv", f"data.path={path}", "model=mlp", *overrides, cwd=tmp_path)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and message.format(path=path) in proc.stderr


def test_corrupt_image_and_mismatched_arrays_are_named(tmp_path):
    from dltrain.data.array_files import array_files
    from dltrain.data.images import image_folder

    write_image_folder(tmp_path / "images", per_class=3)
    (tmp_path / "images" / "dark" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: not a readable image"):
        image_folder(str(tmp_path / "images"), [8, 8])
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 3)), y=np.zeros(9))
    with pytest.raises(DataError, match=r"bad.npz: 10 feature rows but 9 targets"):
        array_files(str(tmp_path / "bad.npz"))


def test_a_missing_required_key_names_it(tmp_path):
    proc = dltrain_command("data=csv", "data.target=y", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "dltrain: error: data.path is required here: add data.path=<value> to the command"
    proc = dltrain_command("data=csv", cwd=tmp_path)  # every missing key, named together
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dltrain: error: 2 mistakes in the config: (1) data.path is required here: add data.path=<value> to the "
        "command; (2) data.target is required here: add data.target=<value> to the command")
