"""LitData round trip: dltrain-prepare of a generated image folder and table into a local folder, then
data=streaming: the same split, encoding and rows as training on the source in memory, metrics within noise of
it, and dltrain-eval/-predict on the streamed run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import dltrain_command, train_run
from datafiles import write_image_folder, write_table
from dltrain.config.compose import load_config
from dltrain.data.datamodule import build_datamodule
from dltrain.errors import DataError


def prepare(cwd: Path, *args: str):
    return dltrain_command(*args, cwd=cwd, script="dltrain-prepare")


def datamodule(overrides: list[str]):
    cfg = load_config(overrides)
    return build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed)


def assert_same_rows(source: list[str], prepared: Path) -> None:
    """The prepared folder's spec is the in-memory one's (task, classes, shape, encoding) and each split holds
    the very rows, in order, that training in memory draws and encodes."""
    memory, streamed = datamodule(source), datamodule(["data=streaming", f"data.path={prepared}"])
    assert streamed.spec == memory.spec
    for part in ("train_set", "val_set", "test_set"):
        batches = list(getattr(streamed, part).labelled_batches(batch_size=7))
        features, targets = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
        assert len(getattr(streamed, part)) == len(getattr(memory, part)) == len(targets)
        assert torch.equal(features, getattr(memory, part).features)
        assert torch.equal(targets, getattr(memory, part).targets)


def test_a_table_prepared_then_streamed_trains_as_in_memory_and_its_run_is_evaluated(tmp_path):
    write_table(tmp_path / "t.csv")
    source = ["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=label"]
    done = prepare(tmp_path, *source, f"output={tmp_path / 'prepared'}")
    assert done.returncode == 0, done.stderr
    assert "train with: dltrain data=streaming" in done.stdout
    assert_same_rows(source, tmp_path / "prepared")
    described = json.loads((tmp_path / "prepared" / "dltrain.json").read_text())
    colour = next(column for column in described["spec"]["encoder"]["columns"] if column["name"] == "colour")
    assert colour["categories"] == ["blue", "green", "red"]  # fitted at prepare, on the training rows

    overrides = ["callbacks.early_stopping=null", "trainer.max_epochs=2"]
    memory = train_run(tmp_path / "memory", source + overrides)
    streamed = train_run(tmp_path / "streamed", ["data=streaming", f"data.path={tmp_path / 'prepared'}",
                                                 "data.num_workers=0", *overrides])
    assert streamed["streamed"]["engine"] == "litdata" and streamed["streamed"]["rows"]["test"] == 60
    assert (streamed["data"], streamed["task"]) == (memory["data"], memory["task"])
    assert abs(streamed["test"]["test_acc"] - memory["test"]["test_acc"]) <= 0.1  # another shuffling order
    assert len(pd.read_csv(tmp_path / "streamed" / "test_predictions.csv")) == 60

    evaluated = dltrain_command("ckpt_path=streamed", cwd=tmp_path, script="dltrain-eval")
    assert evaluated.returncode == 0, evaluated.stderr
    scored = json.loads((tmp_path / "streamed" / "eval_best.json").read_text())
    assert scored["metrics"] == pytest.approx(streamed["test"], abs=1e-6)
    predicted = dltrain_command("ckpt_path=streamed", f"input={tmp_path / 't.csv'}", cwd=tmp_path,
                                script="dltrain-predict")
    assert predicted.returncode == 0, predicted.stderr
    assert len(pd.read_csv(tmp_path / "streamed" / "predictions_t.csv")) == 300


def test_an_image_folder_prepared_then_streamed_keeps_its_pixels_split_and_pipeline(tmp_path):
    write_image_folder(tmp_path / "photos", per_class=12, size=20)
    source = ["data=image_folder", f"data.path={tmp_path / 'photos'}", "data.image_size=[16,16]"]
    done = prepare(tmp_path, *source, f"output={tmp_path / 'prepared'}")
    assert done.returncode == 0, done.stderr
    assert_same_rows(source, tmp_path / "prepared")  # uint8 on disk, exactly the in-memory floats once read
    pipeline = json.loads((tmp_path / "prepared" / "dltrain.json").read_text())["pipeline"]
    assert (pipeline["image_size"], pipeline["channels"]) == ([16, 16], 3)

    results = train_run(tmp_path / "run", ["data=streaming", f"data.path={tmp_path / 'prepared'}",
                                           "data.num_workers=0", "trainer.max_epochs=1"])
    assert results["status"] == "completed" and results["data"] == "photos"
    predicted = dltrain_command("ckpt_path=run", f"input={tmp_path / 'photos'}", cwd=tmp_path,
                                script="dltrain-predict")  # resized as training's images were
    assert predicted.returncode == 0, predicted.stderr
    assert len(pd.read_csv(tmp_path / "run" / "predictions_photos.csv")) == 24


def test_prepare_refuses_an_output_in_use_in_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    write_table(tmp_path / "t.csv")
    args = ["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=label", f"output={tmp_path / 'out'}"]
    refused = prepare(tmp_path, *args)
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "overwrite=true" in refused.stderr
    refused = prepare(tmp_path, *args, "overwrite=true")  # overwrite replaces a prepared folder, never the user's
    assert refused.returncode == 1 and "did not write (notes.txt)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and (tmp_path / "out" / "notes.txt").exists()


def test_a_prepared_folder_whose_fields_are_pickles_is_refused_before_a_sample_is_read(tmp_path):
    from dltrain.data.litdata_source import FORMAT, prepared

    spec = {"name": "t", "task": "binary", "input_shape": [3], "num_classes": 2, "kind": "table"}
    (tmp_path / "dltrain.json").write_text(json.dumps({"format": FORMAT, "spec": spec,
                                                       "rows": {"train": 4, "val": 0, "test": 0}}))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "index.json").write_text(json.dumps({"config": {"data_format": ["pickle", "int"]},
                                                               "chunks": []}))
    with pytest.raises(DataError, match=r"fields stored as pickle; refused: data=streaming reads only"):
        prepared(str(tmp_path))
    # Chunks that do not hold the rows dltrain.json counts (a folder changed since it was prepared): refused too.
    (tmp_path / "train" / "index.json").write_text(json.dumps({"config": {"data_format": ["int", "int"]},
                                                               "chunks": [{"chunk_size": 3}]}))
    with pytest.raises(DataError, match=r"train/index.json: its chunks hold 3 rows, and dltrain.json says 4: prepare"):
        prepared(str(tmp_path))


def test_prepare_names_an_unreadable_image_in_one_line(tmp_path):
    write_image_folder(tmp_path / "photos", per_class=12)
    (tmp_path / "photos" / "dark" / "3.png").write_text("not an image")
    refused = prepare(tmp_path, "data=image_folder", f"data.path={tmp_path / 'photos'}", "data.channels=3",
                      f"output={tmp_path / 'prepared'}")
    assert refused.returncode == 1
    assert "dltrain-prepare: error: " + str(tmp_path / "photos" / "dark" / "3.png") + ": not a readable image" \
        in refused.stderr
    assert not (tmp_path / "prepared" / "dltrain.json").exists()  # unfinished: nothing says it is whole


@pytest.mark.slow
def test_two_ddp_ranks_of_two_workers_read_every_row_once_an_epoch(tmp_path):
    """Training rows too: LitData's own sharing would give each rank 13 whole batches of 16 and leave 16 of the
    432 rows out of every epoch."""
    import os

    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=601)  # 432 training rows, 48 validation, 121 test
    pd.DataFrame({"rid": np.arange(601), "x0": x, "y": (x > 0).astype(int)}).to_csv(tmp_path / "t.csv", index=False)
    done = prepare(tmp_path, "data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.features=[rid,x0]",
                   f"output={tmp_path / 'prepared'}")
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "prepared" / "dltrain.json").read_text())["rows"]
    ids = tmp_path / "ids"
    ids.mkdir()
    proc = dltrain_command("data=streaming", f"data.path={tmp_path / 'prepared'}", "data.num_workers=2",
                           "data.batch_size=16", "trainer=ddp_cpu", "trainer.devices=2", "model=mlp",
                           "trainer.max_epochs=2", "+callbacks.ids._target_=test_table_streaming.RecordIds",
                           f"+callbacks.ids.folder={ids}", cwd=tmp_path,
                           env={"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                            os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, proc.stderr
    assert rows["train"] % 32 == 16 and "left out" not in proc.stderr
    seen = {}
    for file in ids.iterdir():
        stage, epoch, _ = file.name.split("_")
        seen.setdefault((stage, epoch), []).extend(int(i) for i in file.read_text().split())
    assert sorted(seen) == [("test", "2"), ("train", "0"), ("train", "1"), ("val", "0"), ("val", "1")]
    for (stage, epoch), together in seen.items():
        assert len(together) == len(set(together)) == rows[stage], (stage, epoch)
    assert (ids / "train_0_0").read_text() != (ids / "train_1_0").read_text()  # shuffled anew each epoch


def test_data_stream_false_is_refused_for_data_streaming(tmp_path):
    from dltrain.config.checks import check_config
    from dltrain.errors import ConfigError

    for setting in ("auto", "true"):
        check_config(load_config(["data=streaming", f"data.path={tmp_path}", f"data.stream={setting}"]))
    with pytest.raises(ConfigError, match=r"^data.stream=false: data=streaming is always streamed \(LitData reads"):
        check_config(load_config(["data=streaming", f"data.path={tmp_path}", "data.stream=false"]))


def test_ddp_shares_of_a_prepared_training_split_hold_every_row_once_and_resume_at_the_very_batch(tmp_path):
    """PreparedBatches, as each of 2 ranks serves it through 2 workers: every row in one batch of one rank an
    epoch, the same number of batches on both ranks, another order the next epoch; a loader restored from a
    mid-epoch state serves the rest of the epoch as the uninterrupted one did, then the next epoch."""
    import numpy as np

    from dltrain.data.litdata_source import PreparedBatches
    from dltrain.data.streaming import streamed_loader

    x = np.arange(203, dtype=float)
    pd.DataFrame({"rid": x, "y": (x % 3 == 0).astype(int)}).to_csv(tmp_path / "t.csv", index=False)
    done = prepare(tmp_path, "data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.features=[rid]",
                   f"output={tmp_path / 'prepared'}")
    assert done.returncode == 0, done.stderr
    module = datamodule(["data=streaming", f"data.path={tmp_path / 'prepared'}", "data.batch_size=8"])
    column = module.spec.encoder["columns"][0]

    def loader(rank: int):
        batches = PreparedBatches(module.train_set, module.chunks["train"], rank, 2, 0)
        return streamed_loader(batches, batch_size=None, num_workers=2, pin_memory=False)

    def ids(batches):
        return [np.rint(x[:, 0].double().numpy() * column["std"] + column["mean"]).astype(int).tolist()
                for x, _ in batches]
    ranks = [loader(0), loader(1)]
    epochs = [[ids(rank) for rank in ranks] for _ in range(2)]
    for epoch in epochs:
        assert len(epoch[0]) == len(epoch[1])
        together = sum(epoch[0] + epoch[1], [])
        assert len(together) == len(set(together)) == module.train_set.rows
    assert epochs[0] != epochs[1]
    first = loader(1)
    served = iter(first)
    head = [ids([next(served)])[0] for _ in range(5)]
    resumed = loader(1)
    resumed.load_state_dict(first.state_dict())
    assert head + ids(resumed) == epochs[0][1]
    assert ids(resumed) == epochs[1][1]
