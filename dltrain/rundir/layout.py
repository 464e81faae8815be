"""Every file of a run directory, named in one place: what training writes there and what the commands that read
a run (dltrain-eval, -predict, -export, -serve, -runs, resume, the plots) look for. The README's "The run
directory" section shows the same layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The checkpoint files conf/callbacks/default.yaml's model_checkpoint and last_checkpoint write (filename: best,
# last): evaluation and prediction read the best, a resume continues from the last.
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.ckpt", "last.ckpt"
FOLD_PREFIX = "fold_"  # cross-validation's fold folders: fold_1, fold_2, ...
HYDRA_FOLDER = ".hydra"  # Hydra's own record of a job (hydra.output_subdir): before dltrain, not a run's file
_NAME_PART = 60  # at most this many characters of a run's name in its folder's name


def run_folder_name(stamp: str, name: str | None) -> str:
    """A new run's folder name: its start time, then its name= where it has one (`ls outputs/runs` finds it),
    each character other than a letter, digit, '.', '_' or '-' there as '-' (results.json keeps the name as given)."""
    if not name:
        return stamp
    part = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in str(name))[:_NAME_PART]
    return f"{stamp}_{part.strip('.')}" if part.strip(".") else stamp


@dataclass(frozen=True)
class RunDir:
    """A run directory (or a fold's, or a sweep job's) and the paths of its files."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> tuple[Path, RunDir]:
        """(checkpoint file, its run directory) for a checkpoint file or a run directory (its best checkpoint)."""
        path = Path(path).expanduser()
        if path.is_dir():
            return cls(path).best_checkpoint, cls(path)
        return path, cls(path.parent.parent if path.parent.name == "checkpoints" else path.parent)

    @property
    def results(self) -> Path:
        """results.json: the record of what the run was and how it went (its status while it runs)."""
        return self.path / "results.json"

    @property
    def config(self) -> Path:
        """config.yaml: the resolved config the run trained with, which a resume continues from."""
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        """metrics.csv: a row of metrics per epoch."""
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        """The epoch-end checkpoint a resume continues from."""
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def interrupted_checkpoint(self) -> Path:
        """What a run stopped by a signal saves (dltrain.training.callbacks.InterruptCheckpoint)."""
        return self.checkpoints / "interrupted.ckpt"

    @property
    def model_summary(self) -> Path:
        return self.path / "model_summary.txt"

    @property
    def test_predictions(self) -> Path:
        return self.path / "test_predictions.csv"

    @property
    def model_card(self) -> Path:
        """What the run trained, on which data, how good, how made (dltrain.report.model_card)."""
        return self.path / "model_card.md"

    @property
    def hydra_overrides(self) -> Path:
        """Hydra's record of the command line's overrides of the job."""
        return self.path / HYDRA_FOLDER / "overrides.yaml"

    @property
    def importance(self) -> Path:
        """explain=true's permutation importance of a table's columns (dltrain.report.explanations)."""
        return self.path / "importance.csv"

    def plot(self, name: str) -> Path:
        """A plot's file: curves, confusion_matrix, predictions (a regression's), calibration, importance,
        attributions, cv_curves, summary (a sweep's)."""
        return self.path / f"{name}.png"

    def fold(self, number: int) -> RunDir:
        """The run directory of cross-validation's fold `number` (from 1)."""
        return RunDir(self.path / self.fold_name(number))

    @staticmethod
    def fold_name(number: int) -> str:
        return f"{FOLD_PREFIX}{number}"

    def evaluation(self, checkpoint: Path, source: Path | None = None) -> Path:
        """dltrain-eval's default output: eval_<checkpoint>.json, or eval_<checkpoint>_<input>.json for an input."""
        return self.path / (f"eval_{checkpoint.stem}_{source.stem}.json" if source else f"eval_{checkpoint.stem}.json")

    # What a run leaves in its directory (Hydra's .hydra/ and the log file come before dltrain and do not count).
    def run_files(self) -> tuple[Path, ...]:
        return self.config, self.metrics, self.results, self.checkpoints
