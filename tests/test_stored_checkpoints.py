"""Checkpoints written by an earlier dltrain (tests/fixtures, see its README) still evaluate and predict the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import dltrain_command

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["iris_mlp", "iris_mlp_kl_div"])
def test_a_checkpoint_written_before_the_regrouping_evaluates_and_predicts_as_it_did(tmp_path, name):
    ckpt = tmp_path / f"{name}.ckpt"
    shutil.copy(FIXTURES / f"{name}.ckpt", ckpt)
    out = tmp_path / "eval.json"
    proc = dltrain_command(f"ckpt_path={ckpt}", f"output={out}", cwd=tmp_path, script="dltrain-eval")
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((FIXTURES / f"{name}.eval.json").read_text())
    assert json.loads(out.read_text())["metrics"] == pytest.approx(expected, rel=1e-5)

    predictions = tmp_path / "predictions.csv"
    proc = dltrain_command(f"ckpt_path={ckpt}", f"input={FIXTURES / 'iris_rows.csv'}", f"output={predictions}",
                           cwd=tmp_path, script="dltrain-predict")
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(pd.read_csv(predictions), pd.read_csv(FIXTURES / f"{name}.predictions.csv"),
                                  rtol=1e-5)


@pytest.mark.parametrize("place, target", [("loss", "dltrain.losses.build_loss"),  # moved, but not in the table
                                           ("optimizer", "dltrain.losses.SoftTargetKLDiv")])  # renamed, wrong place
def test_only_a_moved_preset_target_is_renamed_and_still_only_at_its_place(tmp_path, place, target):
    import torch

    from dltrain.checkpoints.reading import read_checkpoint
    from dltrain.config.trust import UntrustedConfig

    checkpoint = torch.load(FIXTURES / "iris_mlp_kl_div.ckpt", map_location="cpu", weights_only=True)
    assert read_checkpoint(FIXTURES / "iris_mlp_kl_div.ckpt")["hyper_parameters"]["config"]["loss"]["_target_"] \
        == "dltrain.training.losses.SoftTargetKLDiv"
    checkpoint["hyper_parameters"]["config"][place]["_target_"] = target
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    with pytest.raises(UntrustedConfig, match=rf"asks to build {place} with _target_="):
        read_checkpoint(tmp_path / "crafted.ckpt")
