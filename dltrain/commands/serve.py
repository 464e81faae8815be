"""`dltrain-serve ckpt_path=<checkpoint or run dir> [host=127.0.0.1] [port=8000] [workers=1]`: predictions over HTTP.

POST /predict takes JSON {"rows": [{column: value, ...}, ...]} for a table model, {"inputs": [...]} (nested
lists of the input shape) for arrays and sequences, {"images": [base64 PNG or JPEG, ...]} or multipart files
for an image model, and answers what dltrain-predict gives for the same inputs: each row's class and class
probabilities, or its value in the target's units. GET /health, GET /metadata (model, task, inputs, classes,
the run's test metrics), OpenAPI docs at /docs. A row that breaks training's rules gets its error in its place
and the others their predictions (a request with none predictable is a 422). A bad request gets a 4xx JSON
error naming the field; a body over max_body_mb or a batch over max_batch_rows is refused. Concurrent requests'
rows are gathered into one forward pass of at most microbatch_rows rows, a request waiting at most
microbatch_wait_ms for others (microbatch_rows=0: each request its own pass), with `threads` torch threads
(auto: a worker's share of the cores less one for its HTTP event loop). Ctrl-C stops the server.
"""

from __future__ import annotations

from dltrain.commands.shared import run_tool

KEYS = {"ckpt_path": None, "host": "127.0.0.1", "port": "8000", "workers": "1", "trust": None,
        "on_unknown_category": "error", "max_batch_rows": "1024", "max_body_mb": "16", "microbatch_rows": "256",
        "microbatch_wait_ms": "2", "threads": "auto"}
PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def serve(ckpt_path: str, *, host: str = "127.0.0.1", port: str = "8000", workers: str = "1", trust: str | None = None,
          on_unknown_category: str = "error", max_batch_rows: str = "1024", max_body_mb: str = "16",
          microbatch_rows: str = "256", microbatch_wait_ms: str = "2", threads: str = "auto") -> None:
    """Serve the checkpoint's predictions until stopped."""
    import os

    from dltrain.config.checks import installed
    from dltrain.errors import ConfigError

    lacking = [package for module, package in PACKAGES.items() if not installed(module)]
    if lacking:
        raise ConfigError(f"dltrain-serve needs the package {lacking[0]}, which is not installed: "
                          f"pip install \"dltrain[serve]\"")
    numbers = _numbers(port=port, workers=workers, max_batch_rows=max_batch_rows, microbatch_rows=microbatch_rows,
                       threads=threads)
    body_mb = _number("max_body_mb", max_body_mb, "a number of megabytes > 0", lambda mb: mb > 0)
    wait_ms = _number("microbatch_wait_ms", microbatch_wait_ms, "a number of milliseconds >= 0", lambda ms: ms >= 0)
    from dltrain.checkpoints.header import checkpoint_file

    checkpoint_file(ckpt_path)  # a wrong path answered before torch is imported

    from dltrain.data.inputs import check_unknown_category  # imports torch: after the quick checks

    check_unknown_category(on_unknown_category)

    import uvicorn

    from dltrain.collection import resume_collections
    from dltrain.quiet import quiet_libraries
    from dltrain.inference.app import Settings, create_app, load_served, settings_environment

    quiet_libraries()
    settings = Settings(ckpt_path, trust, on_unknown_category, numbers["max_batch_rows"], body_mb,
                        numbers["microbatch_rows"], wait_ms, numbers["threads"])
    served = load_served(settings)  # a bad checkpoint is refused here, in one line, before any server starts
    resume_collections()  # the libraries are imported (dltrain.collection)
    address = f"http://{host}:{numbers['port']}"
    meta = served.metadata
    print(f"serving model={meta['model']} ({meta['task']}, data={meta['data']}) from {meta['checkpoint']} on "
          f"{address} (POST /predict, GET /health, GET /metadata, docs at {address}/docs); Ctrl-C stops it")
    print(f"micro-batching: concurrent requests' rows gathered into one forward pass of at most "
          f"{settings.microbatch_rows} rows, a request waiting at most {wait_ms:g} ms for others "
          "(microbatch_rows, microbatch_wait_ms)" if settings.microbatch_rows else
          "micro-batching: off (microbatch_rows=0): each request is a forward pass of its own")
    print(f"torch threads for the forward passes: {numbers['threads']} per worker"
          + (" (threads=auto: the cores' share of a worker, less one for its HTTP event loop)" if threads == "auto" else ""))
    if numbers["workers"] == 1:
        uvicorn.run(create_app(served, settings), host=host, port=numbers["port"], log_level="info")
    else:  # each uvicorn worker process builds the app from the settings (uvicorn takes an import string then)
        os.environ.update(settings_environment(settings))
        uvicorn.run("dltrain.inference.app:app_from_environment", factory=True, host=host, port=numbers["port"],
                    workers=numbers["workers"], log_level="info")


def _numbers(**values: str) -> dict[str, int]:
    """The whole-number keys, checked; threads=auto: a worker's share of the cores, less one left to its event
    loop (HTTP, JSON), whose thread otherwise preempts torch's team of threads mid-operation (on 2 shared
    cores: a third of the throughput)."""
    import os

    from dltrain.errors import ConfigError

    lowest = {"port": 1, "workers": 1, "max_batch_rows": 1, "microbatch_rows": 0, "threads": 1}
    numbers = {key: _whole(key, value, lowest[key]) for key, value in values.items()
               if (key, value) != ("threads", "auto")}
    if numbers["port"] > 65535:
        raise ConfigError(f"port={values['port']} is not valid: expected a port number from 1 to 65535")
    numbers.setdefault("threads", max(1, len(os.sched_getaffinity(0)) // numbers["workers"] - 1))
    return numbers


def _number(key: str, value: str, expected: str, valid) -> float:
    from dltrain.errors import ConfigError

    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not valid(number) or number == float("inf"):
        raise ConfigError(f"{key}={value} is not valid: expected {expected}")
    return number


def _whole(key: str, value: str, low: int) -> int:
    from dltrain.errors import ConfigError

    if not value.isdigit() or int(value) < low:
        raise ConfigError(f"{key}={value} is not valid: expected a whole number >= {low}")
    return int(value)


def main() -> None:
    run_tool("dltrain-serve", __doc__, KEYS, ("ckpt_path",), serve, positional=("ckpt_path",))
