"""Python's cyclic garbage collector held off while a console script imports, and resumed before it reads data.

Importing torch, Lightning, scikit-learn and pandas creates objects that live as long as the process, and while
they are imported the collector walks them again and again: a large share of a command's start
(benchmarks/README.md). The console scripts hold collections from their first line (`dltrain`'s console_main,
the others' run_tool); once a command's libraries are imported (a run's, or a checkpoint's module built), it
resumes them: every object alive is moved out of the collector's sight (gc.freeze, as Python's gc documentation
advises for objects that live for good) and collections go on for the data and whatever the command creates.
dltrain-runs, which reads small files only, holds them to its end. The few cycles the imports left behind are
frozen with them. In-process use (tests, notebooks) never holds, so resuming there changes nothing.
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
