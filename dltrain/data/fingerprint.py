"""The data a run read, as a SHA-256 fingerprint (results.json's data_fingerprint, the model card, dltrain-runs):
two runs with different fingerprints read different data, whatever their config says.

The user's files are hashed as they are on disk: each named file, and each file of a named folder under its
path relative to that folder, in sorted order, read in chunks (a large folder is never held in memory). Data
over CONTENT_BYTES is fingerprinted by its listing instead (each file's path, size and modification time): it
is computed before the first step, and reading every byte of a large folder first would hold the first step
back by the time a copy of the data takes (the record and the model card say which it is). An
embedded or generated set has no file of its own: the arrays it loads are hashed, with the set's name and the
version of the library that provides it. A source in object storage (s3://) is not read twice: no fingerprint,
and the record says why.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

DATA_FILE_KEYS = ("path", "targets_path", "val_path", "test_path")  # data keys that name a file or folder
_CHUNK = 1 << 20
CONTENT_BYTES = 256 * 2**20  # the most data whose bytes are hashed (about half a second); larger: its listing
BY_CONTENT, BY_LISTING = "files", "file names, sizes and times"  # a files fingerprint's "of"
_SCIKIT_LEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")  # dltrain.data.embedded's loaders of them


def data_fingerprint(config: dict[str, Any], data: Any) -> dict[str, Any]:
    """The fingerprint of the data `config` (a data config) names, `data` being what it loaded (an ArrayData,
    or a streamed source's description)."""
    named = [str(config[key]) for key in DATA_FILE_KEYS if config.get(key)]
    remote = [name for name in named if "://" in name]
    if remote:
        return {"sha256": None, "why": f"{remote[0]} is in object storage: not read to fingerprint it"}
    if named:
        return _files_fingerprint([Path(name).expanduser() for name in named])
    features, targets = getattr(data, "features", None), getattr(data, "targets", None)
    if features is None:
        return {"sha256": None, "why": "the source loads no arrays to hash"}
    digest = hashlib.sha256(f"{config.get('name') or getattr(data, 'name', '')}\n".encode())
    for part in (features, targets):
        digest.update(_array_bytes(part))
    return {"sha256": digest.hexdigest(), "of": "the loaded arrays", "set": getattr(data, "name", None),
            "provider": _provider(config)}


def _files_fingerprint(paths: list[Path]) -> dict[str, Any]:
    """SHA-256 over each path's files: a file's name (a folder's files by relative path, in order) and its
    bytes, or above CONTENT_BYTES in all its size and modification time."""
    listed = [(file.relative_to(path).as_posix() if path.is_dir() else file.name, file, file.stat())
              for path in paths
              for file in (sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])]
    size = sum(stat.st_size for _, _, stat in listed)
    by_content = size <= CONTENT_BYTES
    digest = hashlib.sha256()
    for name, file, stat in listed:
        digest.update(f"{name}\n".encode())
        if not by_content:
            digest.update(f"{stat.st_size} {stat.st_mtime_ns}\n".encode())
            continue
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return {"sha256": digest.hexdigest(), "of": BY_CONTENT if by_content else BY_LISTING,
            "files": len(listed), "bytes": size, "paths": [str(path) for path in paths]}


def _array_bytes(values: Any) -> bytes:
    """A feature or target array's bytes; a table's through pandas' row hashes (its columns may hold text)."""
    import numpy as np

    if hasattr(values, "to_numpy") and hasattr(values, "columns"):  # a DataFrame
        import pandas as pd

        return pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes() + \
            "\n".join(map(str, values.columns)).encode()
    return np.ascontiguousarray(np.asarray(values)).tobytes()


def _provider(config: dict[str, Any]) -> str:
    """The library (and version) whose function made an embedded set: scikit-learn's loaders, or dltrain's own
    generators and torchvision's readers."""
    from importlib.metadata import PackageNotFoundError, version

    module, _, function = str(config.get("_target_", "")).rpartition(".")
    package = ("scikit-learn" if module == "dltrain.data.embedded" and function in _SCIKIT_LEARN_SETS
               else "torchvision" if function == "vision_set" else "dltrain")
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return package
