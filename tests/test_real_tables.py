"""The user's own tables as real exports come: a row-index column, gaps, huge numbers, nested Parquet columns,
a numeric text column, and `dltrain validate` reading the header."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import dltrain_command, read_results, train_run
from dltrain.data.tables import identifier_columns, table
from dltrain.errors import DataError
from test_data import datamodule

FAST = ["model=mlp", "trainer=cpu", "trainer.max_epochs=2"]


def sorted_regression(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Rows sorted by the target, as many published files are: a row number then leaks it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": x[:, 0] + rng.normal(0, 1, rows)})
    return frame.sort_values("y").reset_index(drop=True)


def test_a_pandas_row_index_is_left_out_said_and_recorded_and_the_metric_is_that_without_it(tmp_path):
    frame = sorted_regression()
    frame.to_csv(tmp_path / "indexed.csv")  # pandas' index: a first column read back as 'Unnamed: 0'
    frame.to_csv(tmp_path / "plain.csv", index=False)
    proc = dltrain_command("data=csv", f"data.path={tmp_path / 'indexed.csv'}", "data.target=y", *FAST,
                           "hydra.run.dir=with", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "left out of the inputs" in line]
    assert len(said) == 1 and "column 'Unnamed: 0'" in said[0] and "data.features=[...]" in said[0]
    with_index = read_results(tmp_path / "with")
    assert with_index["excluded_columns"] == [
        {"column": "Unnamed: 0", "reason": "named 'Unnamed: 0', as pandas and R name a row index"}]
    without = train_run(tmp_path / "without", ["data=csv", f"data.path={tmp_path / 'plain.csv'}", "data.target=y",
                                               "model=mlp"])
    assert without["excluded_columns"] == []
    assert with_index["test"]["test_r2"] == pytest.approx(without["test"]["test_r2"], abs=1e-6)
    # the preprocessing says which columns the model never reads
    spec = datamodule("data=csv", f"data.path={tmp_path / 'indexed.csv'}", "data.target=y").spec
    assert [c["name"] for c in spec.encoder["columns"]] == ["a", "b"]
    from dltrain.inference.preprocessing import describe

    described = describe(spec, {"model": {"name": "mlp"}, "data": {"target": "y", "missing": "drop"}})
    assert described["table"]["excluded_columns"] == with_index["excluded_columns"]
    # kept on purpose: data.features lists it, and nothing is left out
    kept = datamodule("data=csv", f"data.path={tmp_path / 'indexed.csv'}", "data.target=y",
                      "data.features=[Unnamed: 0,a,b]")
    assert kept.spec.input_shape == (3,) and kept.facts["excluded_columns"] == []


def test_what_is_an_identifier_and_what_is_a_measurement():
    rng = np.random.default_rng(1)
    rows = 50
    frame = pd.DataFrame({
        "rownames": np.arange(1, rows + 1), "number": rng.permutation(rows),  # 0..N-1 in any order
        "id": [f"p{i}" for i in rng.permutation(rows)],
        "price": rng.uniform(1, 100, rows),  # unique, but a measurement
        "weight": rng.choice(np.arange(1000, 5000), rows, replace=False),  # unique integers, not a run
        "count": np.arange(2, rows + 2),  # a run that starts at 2: no row number
    })
    found = identifier_columns([frame], list(frame.columns))
    assert sorted(found) == ["id", "number", "rownames"]
    repeated = frame.assign(id=[f"p{i % 10}" for i in range(rows)])  # an 'id' that repeats names a group
    assert "id" not in identifier_columns([repeated], ["id"])
    # pandas numbers each saved file from 0: a training and a test file each 0..N-1
    parts = [pd.DataFrame({"row": np.arange(30)}), pd.DataFrame({"row": np.arange(10)})]
    assert list(identifier_columns(parts, ["row"])) == ["row"]


def test_exclude_leaves_out_any_column_and_refuses_one_the_file_has_not(tmp_path):
    path = tmp_path / "t.csv"
    sorted_regression().assign(note=1.0).to_csv(path, index=False)
    data = table(str(path), "y", exclude=["note"])
    assert list(data.features.columns) == ["a", "b"]
    assert data.facts["excluded_columns"] == [{"column": "note", "reason": "data.exclude"}]
    assert (logging.INFO, "column 'note' left out of the inputs: data.exclude") in data.notes
    with pytest.raises(DataError, match="data.exclude names 'nope', which .* has not; the columns are: a, b, y, note"):
        table(str(path), "y", exclude=["nope"])
    with pytest.raises(DataError, match="give one of the two"):
        table(str(path), "y", exclude=["note"], features=["a"])


def test_rows_dropped_for_gaps_are_counted_per_file_and_said(tmp_path):
    train = sorted_regression(200)
    train.loc[[3, 40, 41, 90, 120, 150, 160], "a"] = np.nan  # 7 of 200: over a few percent
    test = sorted_regression(50, seed=2)
    test.loc[7, "b"] = np.nan
    test.loc[9, "y"] = np.nan  # no target: dropped under either policy
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    common = ["data=csv", f"data.path={tmp_path / 'train.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
              "data.target=y"]
    results = train_run(tmp_path / "run", common + ["model=mlp"])
    assert results["dropped_rows"] == {
        "train": {"rows_read": 200, "dropped_missing_target": 0, "dropped_missing_value": 7},
        "test": {"rows_read": 50, "dropped_missing_target": 1, "dropped_missing_value": 1}}
    module = datamodule(*common)
    assert len(module.test_set) == 48 and len(module.train_set) + len(module.val_set) == 193
    lines = [note for _, note in module.notes if note.startswith("dropped")]
    assert lines == ["dropped 1 of 250 rows with no target value: train 0 of 200, test 1 of 50",
                     "dropped 8 of 250 rows with a missing value (data.missing=drop): train 7 of 200, test 1 of 50: "
                     "3% of the rows; data.missing=impute keeps them (the training mean, no category)"]
    imputed = datamodule(*common, "data.missing=impute")
    assert len(imputed.test_set) == 49 and imputed.facts["dropped_rows"]["train"]["dropped_missing_value"] == 0
    # no split fixed: counted before the split is drawn, and said so
    plain = datamodule("data=csv", f"data.path={tmp_path / 'train.csv'}", "data.target=y")
    assert plain.facts["dropped_rows"] == {"all": {"rows_read": 200, "dropped_missing_target": 0,
                                                   "dropped_missing_value": 7}}
    assert f"dropped 7 of 200 rows with a missing value (data.missing=drop), before the split is drawn: {7 / 200:.0%} " \
           "of the rows; data.missing=impute keeps them (the training mean, no category)" in [n for _, n in plain.notes]


@pytest.mark.parametrize("column", ["a", "y"])
def test_a_number_beyond_float32_is_refused_naming_file_column_and_line(tmp_path, column):
    path = tmp_path / "huge.csv"
    frame = sorted_regression(40)
    frame[column] = frame[column].astype(object)
    frame.loc[12, column] = "1e308"
    frame.to_csv(path, index=False)
    proc = dltrain_command("data=csv", f"data.path={path}", "data.target=y", *FAST, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"dltrain: error: {path} line 14: column '{column}' holds 1e+308, beyond the float32 range (±3.4e+38) the "
        "model computes in; rescale the column (other units) or leave it out with data.exclude=[...]"]


def test_a_nested_parquet_column_is_refused_in_one_line_and_can_be_left_out(tmp_path):
    path = tmp_path / "nested.parquet"
    frame = sorted_regression(60)
    pq.write_table(pa.table({"a": frame["a"], "y": frame["y"], "tags": pa.array([[1, 2]] * 60),
                             "where": pa.array([{"x": 1.0}] * 60), "id": pa.array([[i] for i in range(60)])}), path)
    proc = dltrain_command("data=parquet", f"data.path={path}", "data.target=y", *FAST, cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{path}: column 'tags' holds nested values (list<element: int64>)" in proc.stderr
    assert "data.exclude=[tags]" in proc.stderr
    data = table(str(path), "y", exclude=["tags", "where", "id"])
    assert list(data.features.columns) == ["a"]


def test_a_numeric_text_column_and_one_without_text_are_refused(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"code": np.arange(40) * 7 % 13, "words": [""] * 40, "label": ["x", "y"] * 20}).to_csv(path, index=False)
    proc = dltrain_command("data=csv", f"data.path={path}", "data.target=label", "data.text_column=code", *FAST,
                           cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"dltrain: error: data.text_column=code: column 'code' of {path} holds numbers, not text; leave "
        "data.text_column out to use it as a feature column"]
    with pytest.raises(DataError, match="text column 'words' holds no text in any row"):
        table(str(path), "label", text_column="words", missing="impute")


@pytest.mark.parametrize("key, value, message", [
    ("target", "price", "no target column 'price'; the columns are: a, b, y"),
    ("features", "[a,c]", "no feature column 'c'; the columns are: a, b, y"),
    ("exclude", "[c]", "data.exclude names 'c', which {path} has not"),
    ("split_column", "part", "no split column 'part'"),
])
def test_validate_reads_the_header_and_refuses_a_column_the_file_has_not_as_training_does(tmp_path, key, value,
                                                                                          message):
    path = tmp_path / "t.csv"
    sorted_regression(30).to_csv(path, index=False)
    overrides = ["data=csv", f"data.path={path}", "data.target=y", f"data.{key}={value}", "model=mlp", "trainer=cpu",
                 "trainer.max_epochs=1"]
    checked = dltrain_command("validate", *overrides, cwd=tmp_path)
    trained = dltrain_command(*overrides, cwd=tmp_path)
    assert checked.returncode == trained.returncode == 1
    assert message.format(path=path) in checked.stderr and len(checked.stderr.strip().splitlines()) == 1
    assert checked.stderr == trained.stderr


def test_val_fraction_is_a_share_of_the_rows_the_test_part_leaves_whatever_fixes_it(tmp_path):
    frame = sorted_regression(100)
    frame.to_csv(tmp_path / "all.csv", index=False)
    frame.iloc[:80].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[80:].to_csv(tmp_path / "test.csv", index=False)
    drawn = datamodule("data=csv", f"data.path={tmp_path / 'all.csv'}", "data.target=y", "data.val_fraction=0.1")
    fixed = datamodule("data=csv", f"data.path={tmp_path / 'train.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
                       "data.target=y", "data.val_fraction=0.1")
    embedded = datamodule("data=iris", "data.val_fraction=0.1")
    assert len(drawn.val_set) == len(fixed.val_set) == 8 and len(drawn.test_set) == len(fixed.test_set) == 20
    assert len(embedded.val_set) == 12  # of the 120 rows iris' 150 keep from its test part
    assert json.loads(json.dumps(fixed.facts))  # results.json takes the facts as they are
