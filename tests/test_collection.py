"""Garbage collections held while the `dltrain` console script starts, resumed (with the start's objects frozen)
before its run loads data (dltrain.collection); in-process use is left as it was."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from dltrain.collection import hold_collections, resume_collections

# The console script with two probes: whether collections run while the config is validated (the heavy imports),
# and when training starts.
PROBED = """
import gc, json, sys
import pytorch_lightning as pl
import dltrain.training.preflight as preflight, dltrain.training.train as train_module
from dltrain.commands import train as cli
seen = {}
validate = preflight.validate
def probed(*args, **kwargs):
    seen["validating"] = gc.isenabled()
    return validate(*args, **kwargs)
preflight.validate = probed
class Probe(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        seen["training"], seen["frozen"] = gc.isenabled(), gc.get_freeze_count()
build = train_module.build_callbacks
train_module.build_callbacks = lambda cfg, run_dir, added: build(cfg, run_dir, added + [Probe()])
sys.argv = ["dltrain", "trainer=cpu", "trainer.max_epochs=1", "model=mlp"]
cli.console_main()
print("SEEN " + json.dumps(seen))
"""


def test_the_console_script_holds_collections_until_its_imports_are_done(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBED], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SEEN "))[5:])
    assert seen["validating"] is False
    assert seen["training"] is True
    assert seen["frozen"] > 100_000  # torch's and Lightning's objects, out of the collector's sight


def test_resuming_without_a_hold_changes_nothing():
    frozen = gc.get_freeze_count()
    resume_collections()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_hold_stops_collections_and_its_resume_freezes_what_was_made():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        hold_collections()
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]
        resume_collections()
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
    finally:
        gc.enable()
        gc.unfreeze()  # this test process's objects back in the collector's reach
