"""Python's cyclic garbage collector held off while the `dltrain` command imports, and resumed before its run
loads data.

Importing torch, Lightning, scikit-learn and pandas creates objects that live as long as the process, and while
they are imported the collector walks them again and again: a large share of the start (benchmarks/README.md).
The console script holds collections from its first line; once the imports are done, every object alive is
moved out of the collector's sight (gc.freeze, as Python's gc documentation advises for objects that live for
good) and collections resume for the data and whatever the run creates. The few cycles the imports left behind
are frozen with them. In-process use (tests, notebooks) never holds, so resuming there changes nothing.
"""

from __future__ import annotations

import gc

_held = False


def hold_collections() -> None:
    """Stop automatic collections until resume_collections (the console script's first line)."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def resume_collections() -> None:
    """Freeze what the start created and collect again; nothing where hold_collections did not hold."""
    global _held
    if _held:
        gc.freeze()
        gc.enable()
        _held = False
