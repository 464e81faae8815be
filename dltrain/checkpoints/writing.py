"""How Lightning writes dltrain's checkpoints: atomically, and read back in a run folder that has moved."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dltrain.rundir.files import write_with


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file beside the target and renames it into place: never a truncated checkpoint.

    Every save is written when Lightning asks for it, so once an epoch has ended best.ckpt and last.ckpt on
    disk are that epoch's. Not synced to disk: two saves an epoch would pay an fsync each, and after a power
    cut a checkpoint that did not reach the disk is refused as truncated when loaded, never used half-written.
    Serialized in memory first, so that a full disk surfaces as the OSError it is (torch's zip writer reports
    it as a RuntimeError without the cause) and the file keeps its previous contents.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_with(Path(path), lambda handle: handle.write(buffer.getbuffer()), sync=False)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """A run folder that was moved or copied (another machine, a backup) resumes as if it had stayed: the
        ModelCheckpoint states name the folder the checkpoint now lies in (Lightning would otherwise restore
        only best_model_path, still pointing at the old folder, and forget the best score)."""
        checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        here = str(Path(path).resolve().parent)
        for state in (checkpoint.get("callbacks") or {}).values():
            was = state.get("dirpath") if isinstance(state, dict) else None
            if isinstance(was, str) and was != here and "best_model_path" in state:
                state.update(_moved(state, was, here))
        return checkpoint


def _moved(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A ModelCheckpoint state's paths under `old` moved under `new` (its other values as they were)."""
    def move(value: Any) -> Any:
        return new + value[len(old):] if isinstance(value, str) and value.startswith(old) else value

    moved = {key: move(state[key]) for key in ("dirpath", "best_model_path", "kth_best_model_path",
                                               "last_model_path") if key in state}
    if isinstance(state.get("best_k_models"), dict):
        moved["best_k_models"] = {move(key): value for key, value in state["best_k_models"].items()}
    return moved
