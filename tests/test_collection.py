"""Garbage collections held while a console script imports, resumed (with the imported objects frozen) before it
reads data (dltrain.collection); in-process use is left as it was."""

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


def _seen(code: str, *args: str, cwd) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SEEN "))[5:])


def test_the_console_script_holds_collections_until_its_imports_are_done(tmp_path):
    seen = _seen(PROBED, cwd=tmp_path)
    assert seen["validating"] is False
    assert seen["training"] is True
    assert seen["frozen"] > 100_000  # torch's and Lightning's objects, out of the collector's sight


# dltrain-eval with the same probes: while it opens the checkpoint (the imports), and when it tests.
PROBED_EVAL = """
import gc, json, sys
import pytorch_lightning as pl
import dltrain.training.restore as restore
from dltrain.commands import evaluate as cli
seen = {}
opened = restore.open_checkpoint
def probed(*args, **kwargs):
    seen["opening"] = gc.isenabled()
    return opened(*args, **kwargs)
restore.open_checkpoint = probed
test = pl.Trainer.test
def tested(self, *args, **kwargs):
    seen["testing"], seen["frozen"] = gc.isenabled(), gc.get_freeze_count()
    return test(self, *args, **kwargs)
pl.Trainer.test = tested
sys.argv = ["dltrain-eval", "ckpt_path=" + sys.argv[1]]
cli.main()
print("SEEN " + json.dumps(seen))
"""


def test_the_other_console_scripts_hold_collections_until_the_checkpoint_is_open(run, tmp_path):
    run_dir, _ = run(["model=mlp"])
    seen = _seen(PROBED_EVAL, str(run_dir / "checkpoints" / "best.ckpt"), cwd=tmp_path)
    assert seen["opening"] is False
    assert seen["testing"] is True
    assert seen["frozen"] > 100_000


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
