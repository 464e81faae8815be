"""Faults a bad-input campaign found in config checking, the command line and run folders (issue 33), each
through the real command: one line and exit 1, or the right result, and nothing written where it must not be."""

from __future__ import annotations

import pytest

from conftest import dltrain_command
from test_faults import one_line_error

FAST = ["trainer=cpu", "trainer.max_epochs=1", "model=mlp", "model.hidden_sizes=[16]"]


# ---- a misspelt entry name or key is named, with the name it was likely meant for ---------------------------

@pytest.mark.parametrize("args, message", [
    (["+callbacks.early_stoping.patience=3"], "callbacks.early_stoping.patience names no callback of this config "
                                              "(it has early_stopping, model_checkpoint, last_checkpoint): did you "
                                              "mean callbacks.early_stopping.patience?"),
    (["+callbacks.early_stoping=null"], "callbacks.early_stoping names no callback of this config (it has "
                                        "early_stopping, model_checkpoint, last_checkpoint): did you mean "
                                        "callbacks.early_stopping?"),
    (["+callbacks.early_stopping=3"], None),  # an existing entry set to a number: Hydra refuses the type itself
    (["+logger.save_dir=x"], "logger.save_dir sets a key of no logger (logger=null): choose one first"),
    (["logger=tensorboard", "+logger.save_dirr=x"], "logger.save_dirr is not an argument of TensorBoardLogger nor "
                                                    "of the SummaryWriter it passes its other keys to: did you mean "
                                                    "logger.save_dir?"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not an argument of Lightning's Trainer: did you mean "
                               "trainer.max_epochs?"),
    (["+optimizer.lrr=0.1"], "optimizer.lrr is not an argument of torch.optim.Adam: did you mean optimizer.lr?"),
])
def test_a_misspelt_name_is_named_with_the_closest_one(tmp_path, args, message):
    proc = dltrain_command(*FAST, *args, cwd=tmp_path)
    line = one_line_error(proc)
    if message is not None:
        assert line.startswith(message), line
    assert not list(tmp_path.glob("outputs/runs/*/metrics.csv"))
