"""Tables streamed (data.stream=true): the same encoding and metrics as in memory, every row once an epoch over
DDP ranks and DataLoader workers, a malformed row named or skipped and counted, dltrain-predict in batches."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from conftest import dltrain_command, only_run_dir, read_results, train_run

FAST = ["model=mlp", "trainer=cpu", "trainer.max_epochs=2", "seed=1"]


def make_table(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """A classification table with numbers, a category, gaps, a split column and a row id."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    color = rng.choice(["red", "green", "blue"], rows)
    frame = pd.DataFrame({"rid": np.arange(rows), "x0": x[:, 0], "x1": x[:, 1], "color": color,
                          "split": rng.choice(["train", "val", "test"], rows, p=[0.7, 0.1, 0.2]),
                          "y": ((x[:, 0] + (color == "red") + rng.normal(0, 0.5, rows)) > 0.3).astype(int)})
    frame.loc[[5, 77, rows - 10], "x1"] = np.nan
    return frame


def test_streamed_and_in_memory_give_the_same_encoder_and_metrics(tmp_path):
    make_table().to_csv(tmp_path / "t.csv", index=False)
    data = ["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.split_column=split",
            "data.exclude=[rid]"]
    runs = {stream: train_run(tmp_path / stream, [*data, *FAST, f"data.stream={stream}"]) for stream in ("true", "false")}
    specs = {stream: torch.load(tmp_path / stream / "checkpoints" / "best.ckpt", weights_only=True)[
        "hyper_parameters"]["data_spec"] for stream in runs}
    for streamed, held in zip(specs["true"]["encoder"]["columns"], specs["false"]["encoder"]["columns"], strict=True):
        assert streamed.keys() == held.keys()
        assert {k: pytest.approx(v) if isinstance(v, float) else v for k, v in streamed.items()} == held
    assert {k: v for k, v in specs["true"].items() if k != "encoder"} == {
        k: v for k, v in specs["false"].items() if k != "encoder"}
    assert runs["true"]["dropped_rows"] == runs["false"]["dropped_rows"]
    assert runs["true"]["data_path"]["streamed"] and not runs["false"]["data_path"]["streamed"]
    for part in ("val", "test"):
        for name, value in runs["false"][part].items():  # the batches differ (near-equal sizes, another order)
            assert runs["true"][part][name] == pytest.approx(value, abs=0.05), name


class RecordIds(pl.Callback):
    """Writes the row ids of every batch (the first input, de-standardized) to <folder>/<stage>_<epoch>_<rank>."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _record(self, trainer, module, batch, stage: str) -> None:
        if trainer.sanity_checking:
            return
        column = module.spec.encoder["columns"][0]
        ids = np.rint(batch[0][:, 0].double().numpy() * column["std"] + column["mean"]).astype(int)
        with (self.folder / f"{stage}_{trainer.current_epoch}_{trainer.global_rank}").open("a") as handle:
            handle.write("".join(f"{i}\n" for i in ids))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._record(trainer, module, batch, "train")

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self._record(trainer, module, batch, "val")

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self._record(trainer, module, batch, "test")


@pytest.mark.slow
def test_every_row_once_an_epoch_over_two_ddp_ranks_of_two_workers_each(tmp_path):
    frame = make_table(rows=500)
    folder = tmp_path / "table"
    folder.mkdir()
    for number, start in enumerate((0, 170, 340)):  # a folder of Parquet files, several row groups each
        frame.iloc[start:start + 170].to_parquet(folder / f"part{number}.parquet", row_group_size=40)
    ids = tmp_path / "ids"
    ids.mkdir()
    proc = dltrain_command("data=parquet", f"data.path={folder}", "data.target=y", "data.features=[rid,x0,x1,color]",
                           "data.missing=impute", "data.stream=true", "data.num_workers=2", "data.batch_size=16",
                           "trainer=ddp_cpu", "trainer.devices=2", *FAST[:2], "trainer.max_epochs=2",
                           "+callbacks.ids._target_=test_table_streaming.RecordIds", f"+callbacks.ids.folder={ids}",
                           cwd=tmp_path,
                           env={"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                            os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr
    results = read_results(only_run_dir(tmp_path))
    counts = {part: results["dropped_rows"][part]["rows_read"] for part in ("train", "val", "test")}
    assert sum(counts.values()) == 500
    seen = {}
    for file in ids.iterdir():
        stage, epoch, rank = file.name.split("_")
        seen.setdefault((stage, epoch), []).append([int(i) for i in file.read_text().split()])
    assert sorted(seen) == [("test", "2"), ("train", "0"), ("train", "1"), ("val", "0"), ("val", "1")]
    parts = {}
    for (stage, epoch), ranks in seen.items():
        assert len(ranks) == 2  # both ranks served batches
        together = sorted(i for rank in ranks for i in rank)
        assert together == sorted(set(together)) and len(together) == counts[stage], (stage, epoch)
        parts.setdefault(stage, set(together))
        assert parts[stage] == set(together)  # the same rows every epoch
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    train = {epoch: ranks for (stage, epoch), ranks in seen.items() if stage == "train"}
    assert train["0"] != train["1"]  # shuffled again each epoch


def test_a_malformed_row_is_named_or_skipped_and_counted(tmp_path):
    frame = make_table(rows=300)
    text = frame.to_csv(index=False).splitlines()
    text.insert(151, text[151] + ",7")  # line 152: a field too many
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    args = ("data=csv", f"data.path={tmp_path / 'bad.csv'}", "data.target=y", "data.exclude=[rid]", "data.stream=true",
            *FAST)
    proc = dltrain_command(*args, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"{tmp_path / 'bad.csv'} line 152: a malformed row" in errors[0], proc.stderr
    proc = dltrain_command(*args, "data.on_bad_sample=skip", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = read_results(only_run_dir(tmp_path))
    assert results["skipped_rows"] == 1
    assert sum(part["rows_read"] for part in results["dropped_rows"].values()) == 300


def test_predict_reads_a_table_larger_than_its_batch_in_batches(tmp_path):
    from dltrain.commands.predict import predict
    from dltrain.data.inputs import read_inputs
    from dltrain.report.predictions import predict_rows
    from dltrain.training.restore import open_checkpoint

    make_table().to_csv(tmp_path / "t.csv", index=False)
    train_run(tmp_path / "run", ["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y",
                                 "data.exclude=[rid]", "data.stream=true", *FAST])
    new = make_table(rows=90, seed=3).drop(columns=["y"])
    new.loc[10, "x0"] = np.nan  # a row training's data.missing=drop refuses: named, kept without a prediction
    new.to_csv(tmp_path / "new.csv", index=False)
    _, _, _, module = open_checkpoint(str(tmp_path / "run"))
    features, ids, faults = read_inputs(tmp_path / "new.csv", module.spec, "drop", "error")  # the whole file at once
    whole = pd.concat([pd.DataFrame(ids), predict_rows(module.eval(), torch.from_numpy(features), faults)[0]], axis=1)
    whole = pd.read_csv(io.StringIO(whole.to_csv(index=False)))  # as the file of a whole read holds it
    batched = pd.read_csv(predict(str(tmp_path / "run"), str(tmp_path / "new.csv"), str(tmp_path / "small.csv"),
                                  batch_size="16", keep="rid"))
    assert len(batched) == 90 and batched["rid"].tolist() == new["rid"].tolist()
    pd.testing.assert_frame_equal(batched.drop(columns=["rid"]), whole, check_exact=False, atol=1e-6)
    assert batched["not_predicted"].notna().sum() == 4 and pd.isna(batched.loc[10, "prediction"])  # 3 gaps made
    assert json.loads((tmp_path / "run" / "results.json").read_text())["data_path"]["streamed"]


def test_a_loader_restored_mid_epoch_serves_the_batches_the_uninterrupted_one_would(tmp_path):
    from dltrain.data.datamodule import build_datamodule
    from dltrain.data.streaming import streamed_loader

    make_table().to_parquet(tmp_path / "t.parquet", row_group_size=50)
    config = {"_target_": "dltrain.data.tables.table", "path": str(tmp_path / "t.parquet"), "target": "y",
              "missing": "impute", "stream": True, "val_fraction": 0.1, "test_fraction": 0.2, "batch_size": 16}
    module = build_datamodule(config, seed=0)

    def loader():
        return streamed_loader(module.train_set.batches(16, shuffle=True), batch_size=None, num_workers=2,
                               pin_memory=False)
    whole = loader()
    epochs = [[y.tolist() for _, y in whole] for _ in range(2)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[0], [])) == sorted(sum(epochs[1], []))
    first = loader()
    served = iter(first)
    head = [next(served)[1].tolist() for _ in range(7)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [y.tolist() for _, y in resumed] == epochs[0]
    assert [y.tolist() for _, y in resumed] == epochs[1]  # and the epoch after it is the next epoch's


def test_reading_ahead_or_holding_validation_serves_the_very_batches_read_in_place(tmp_path, monkeypatch):
    """The read-ahead lever changes when a window is read, never what is served: two epochs and a resumed
    position are equal either way; the module reads ahead only where a core is spare for it. Validation rows
    held after their first pass are served again as read, and the second pass reads no file."""
    from dltrain.data import table_module
    from dltrain.data.datamodule import build_datamodule

    make_table(3000).to_parquet(tmp_path / "t.parquet", row_group_size=200)
    config = {"_target_": "dltrain.data.tables.table", "path": str(tmp_path / "t.parquet"), "target": "y",
              "missing": "impute", "stream": True, "val_fraction": 0.1, "test_fraction": 0.2, "batch_size": 16}
    module = build_datamodule(config, seed=0)
    monkeypatch.setattr("dltrain.data.table_loader.SHUFFLE_ROWS", 256)  # several windows an epoch

    def served(read_ahead: bool, state=None):
        batches = module.train_set.batches(16, shuffle=True, read_ahead=read_ahead)
        if state is not None:
            batches.load_state_dict(state)
        return [[torch.cat([x, y[:, None].float()], dim=1) for x, y in batches] for _ in range(2)]

    ahead, in_place = served(True), served(False)
    assert len(ahead[0]) > 3 * 256 // 16 and all(torch.equal(a, b) for a, b in zip(sum(ahead, []), sum(in_place, [])))
    resumed = served(False, {"epoch": 0, "done": 21})
    assert all(torch.equal(a, b) for a, b in zip(resumed[0], ahead[0][21:]))
    validation = module.val_set.batches(16, hold=True)
    first = [torch.cat([x, y[:, None].float()], dim=1) for x, y in validation]
    read = [torch.cat([x, y[:, None].float()], dim=1) for x, y in module.val_set.batches(16)]
    monkeypatch.setattr("dltrain.data.table_source.PieceReader.read", lambda *args: pytest.fail("a file was read"))
    again = [torch.cat([x, y[:, None].float()], dim=1) for x, y in validation]
    assert len(first) > 256 // 16 and all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, read, again))
    assert module.train_set.batches(16, shuffle=True, hold=True).hold is False  # a shuffled split's windows change
    monkeypatch.setattr("dltrain.distributed.cpu_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not table_module._core_spare(None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert table_module._core_spare(None)
