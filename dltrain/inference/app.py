"""dltrain-serve's web app (FastAPI): a checkpoint's predictions over HTTP, the inputs read and encoded exactly
as dltrain-predict reads files (dltrain.data.inputs) and the answer made by the same prediction table.

A bad request is answered with a 4xx JSON error whose detail names the field, and the app goes on serving:
413 for a body over max_body_mb or a batch over max_batch_rows, 400 for a body that is not JSON (or nested
too deeply), 415 for a content type it does not take, 422 for content that does not fit the model. Rows are
predicted one by one as dltrain-predict predicts a file's: a row that breaks training's rules (an empty cell
under data.missing=drop, a word in a numeric column, a number beyond float32, an unseen category) gets
{"prediction": null, "error": ...} and the others their predictions (200, the errors also listed under
"errors"); only a request with no predictable row is a 422. Concurrent requests' rows are gathered into
one forward pass under torch.inference_mode (dltrain.inference.batching), run in a thread of its own so the
server keeps answering meanwhile; the answer is built from the output numbers as plain JSON (a DataFrame
per request cost twenty times the forward pass).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import asdict, dataclass
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.concurrency import run_in_threadpool

from dltrain.data.inputs import array_features, image_features, missing_rule, table_features
from dltrain.data.spec import BINARY, MULTICLASS
from dltrain.inference.batching import MicroBatcher
from dltrain.errors import DataError, one_line

SETTINGS_VARIABLE = "DLTRAIN_SERVE_SETTINGS"  # how uvicorn's worker processes (workers > 1) get the settings
log = logging.getLogger("dltrain.serve")


@dataclass(frozen=True)
class Settings:
    """What the server serves and its limits (dltrain-serve's keys)."""

    ckpt_path: str
    trust: str | None = None
    on_unknown_category: str = "error"
    max_batch_rows: int = 1024
    max_body_mb: float = 16.0
    microbatch_rows: int = 256  # rows of concurrent requests in one forward pass; 0: each request its own
    microbatch_wait_ms: float = 2.0  # how long a request waits at most for others to join its forward pass
    threads: int | None = None  # torch's intra-op threads for the forward passes; None: torch's own choice


class BadRequest(Exception):
    """A request the model cannot answer: its HTTP status and what is wrong, naming the field."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Served:
    """The loaded model and what /metadata says about it."""

    module: Any
    missing: str
    metadata: dict[str, Any]


def load_served(settings: Settings) -> Served:
    """The checkpoint's module (read by the trust rule, as every command reads one) and its metadata."""
    from dltrain.checkpoints.header import checkpoint_file

    checkpoint_file(settings.ckpt_path)  # a wrong path answered before torch is imported

    from dltrain.training.restore import open_checkpoint
    from dltrain.inference.preprocessing import describe
    from dltrain.rundir.files import read_results

    path, run_dir, checkpoint, module = open_checkpoint(settings.ckpt_path, settings.trust)
    module.eval()
    config, spec = module.hparams.config, module.spec
    metadata = {
        "model": config["model"]["name"],
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "data": spec.name, "task": spec.task, "kind": spec.kind,
        "classes": spec.labels() if spec.task != "regression" else None,
        "checkpoint": str(path.resolve()), "epoch": checkpoint["epoch"] + 1,  # counted from 1, as every other record
        "test_metrics": read_results(run_dir).get("test") or {},
        "inputs": describe(spec, config),
        "request": _request_help(spec.kind),
        "limits": {"max_batch_rows": settings.max_batch_rows, "max_body_mb": settings.max_body_mb,
                   "microbatch_rows": settings.microbatch_rows, "microbatch_wait_ms": settings.microbatch_wait_ms},
    }
    return Served(module, missing_rule(config), metadata)


def _request_help(kind: str) -> str:
    return {"table": 'JSON {"rows": [{"<column>": <value>, ...}, ...]}',
            "text": 'JSON {"rows": [{"<text column>": "<text>"}, ...]}',
            "image": 'JSON {"images": ["<base64 PNG or JPEG>", ...]}, or multipart/form-data files',
            "sequence": 'JSON {"inputs": [<one row: nested lists of the input shape>, ...]}'}[kind]


_BODY_SCHEMA = {  # /predict's request body in the OpenAPI docs (/docs): it is read by hand to name bad fields
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "properties": {
            "rows": {"type": "array", "items": {"type": "object"},
                     "description": "a table model: one object per row, column -> value"},
            "inputs": {"type": "array", "items": {},
                       "description": "nested lists, one per row, of the model's input shape (arrays, sequences)"},
            "images": {"type": "array", "items": {"type": "string", "format": "byte"},
                       "description": "an image model: base64 PNG or JPEG files"}}}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    },
}


def create_app(served: Served, settings: Settings) -> FastAPI:
    """The app: POST /predict, GET /health, GET /metadata, and FastAPI's /docs."""
    app = FastAPI(title="dltrain-serve", description=f"Predictions of {served.metadata['model']} on "
                  f"{served.metadata['data']} ({served.metadata['task']}).")

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:  # a lone surrogate shown escaped
        return JSONResponse({"detail": exc.detail.encode("utf-8", "backslashreplace").decode()},
                            status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:  # a bug: logged, never sent
        log.exception("internal error answering %s", request.url.path)
        return JSONResponse({"detail": "internal error (a bug in dltrain-serve, logged by the server)"},
                            status_code=500)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return served.metadata

    forward = _forward(served, settings)

    @app.post("/predict", openapi_extra={"requestBody": _BODY_SCHEMA})
    async def predict(request: Request) -> JSONResponse:
        """The predictions of the rows, inputs or images sent: class and probabilities, or the value."""
        body = await _read_body(request, settings.max_body_mb)
        field, features, faults = await _features(request, body, served, settings)
        kept = [row for row in range(len(features)) if row not in faults]
        numbers = await forward(np.ascontiguousarray(features[kept])) if kept else None
        return JSONResponse(_answers(served.module.spec, numbers, kept, faults, field, len(features)))

    return app


async def _read_body(request: Request, max_body_mb: float) -> bytes:
    """The request's body, refused once it passes max_body_mb (announced or sent)."""
    limit = int(max_body_mb * 1024 * 1024)
    too_big = BadRequest(413, f"body: over max_body_mb={max_body_mb:g} MB; send fewer rows per request")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


async def _features(request: Request, body: bytes, served: Served, settings: Settings
                    ) -> tuple[str, np.ndarray, dict[int, str]]:
    """The request's field (rows, inputs, images, files), its model-ready rows, and the rows that cannot be
    predicted ({row: why})."""
    spec = served.module.spec
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        names, images = await _uploaded_files(request, body)
        _check_count(len(images), "files", settings)
        return "files", _data(lambda: image_features(images, spec, names)), {}
    if kind not in ("application/json", ""):
        raise BadRequest(415, f"content-type {kind}: expected application/json (send the header Content-Type: "
                              "application/json; curl: -H 'content-type: application/json'), or multipart/form-data "
                              "files for an image model")
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body: not valid JSON ({one_line(exc)[:200]})") from None
    except RecursionError:
        raise BadRequest(400, "body: JSON nested too deeply; a request is one object of rows, inputs or "
                              "images") from None
    if not isinstance(payload, dict) or len(payload) != 1 or next(iter(payload)) not in ("rows", "inputs", "images"):
        got = ", ".join(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise BadRequest(422, f"body: expected one field, rows (a table), inputs (nested lists) or images "
                              f"(base64 files), got {got or 'none'}; this model takes {_request_help(spec.kind)}")
    field, values = next(iter(payload.items()))
    if not isinstance(values, list) or not values:
        raise BadRequest(422, f"{field}: expected a non-empty list, one entry per row")
    _check_count(len(values), field, settings)
    faults: dict[int, str] = {}
    if field == "rows":
        return field, _data(lambda: _table_rows(values, served, settings, faults)), faults
    if field == "images":
        return field, _data(lambda: image_features([_decoded(v, i) for i, v in enumerate(values)], spec,
                                                   [f"images[{i}]" for i in range(len(values))])), faults
    return field, _data(lambda: _array_rows(values, served, settings, faults)), faults


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number; send finite numbers")


def _check_count(count: int, field: str, settings: Settings) -> None:
    if count > settings.max_batch_rows:
        raise BadRequest(413, f"{field}: {count} rows, over max_batch_rows={settings.max_batch_rows}; split the "
                              "batch")


def _data(read) -> np.ndarray:
    """`read()`'s rows, a data error (a wrong column, value or image) answered as a 422 naming it."""
    try:
        return read()
    except DataError as exc:
        raise BadRequest(422, str(exc)) from None


def _table_rows(rows: list, served: Served, settings: Settings, faults: dict[int, str]) -> np.ndarray:
    """A request's rows of column -> value as dltrain-predict reads a table's: a malformed row refuses the
    request (422); a number beyond float range (JSON allows 1e999 and 10**400) is that row's fault."""
    import pandas as pd

    limit = float(np.finfo(np.float32).max)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(422, f"rows[{i}]: expected an object of column -> value, got {type(row).__name__}")
        for column, value in list(row.items()):
            if _surrogate(column) or _surrogate(value):
                raise BadRequest(422, f"rows[{i}].{column}: holds a lone UTF-16 surrogate, which is not a Unicode "
                                      "character; send valid text")
            if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
                raise BadRequest(422, f"rows[{i}].{column}: a {type(value).__name__} is not a table value; expected "
                                      "a number, text or null")
            if isinstance(value, (int, float)) and not abs(value) <= limit:  # an int of 400 digits included
                faults.setdefault(i, f"column '{column}' is a number beyond float32's range (about 3.4e38)")
                row = rows[i] = {**row, column: None}
    if served.module.spec.encoder is None:
        raise BadRequest(422, f"rows: this model was trained on {served.module.spec.kind} data; it takes "
                              f"{_request_help(served.module.spec.kind)}")
    return table_features(pd.DataFrame(rows), served.module.spec, served.missing, settings.on_unknown_category,
                          "rows", where=lambda row: f"rows[{row}]", faults=faults)


def _surrogate(value: Any) -> bool:
    """Whether a JSON string holds a lone UTF-16 surrogate (\\ud800 escaped alone): not encodable text."""
    return isinstance(value, str) and any("\ud800" <= character <= "\udfff" for character in value)


def _array_rows(values: list, served: Served, settings: Settings, faults: dict[int, str]) -> np.ndarray:
    """A request's nested lists as dltrain-predict reads an array file's rows: a row with a value that is not
    a finite float32 number (JSON allows 1e999 and 10**400) is that row's fault."""
    spec = served.module.spec
    if spec.kind in ("table", "text"):
        raise BadRequest(422, f"inputs: this model was trained on {spec.kind} data; it takes "
                              f"{_request_help(spec.kind)}")
    rows = []
    try:
        for i, row in enumerate(values):
            try:
                with np.errstate(over="ignore"):  # a float beyond float32 becomes infinite: refused below
                    rows.append(np.asarray(row, dtype=np.float32))
            except OverflowError:  # an integer beyond float64
                faults[i] = "holds a number beyond float32's range (about 3.4e38)"
                rows.append(np.zeros(spec.input_shape, dtype=np.float32))
        array = np.stack(rows)
    except (ValueError, TypeError):
        raise BadRequest(422, f"inputs: not a list of equally shaped rows of numbers; each row has the input shape "
                              f"{tuple(spec.input_shape)}") from None
    return array_features(array, spec, served.missing, settings.on_unknown_category, "inputs",
                          where=lambda row: f"inputs[{row}]", faults=faults)


def _decoded(value: Any, index: int) -> bytes:
    """A base64 image (a data: URL's prefix allowed)."""
    if not isinstance(value, str):
        raise BadRequest(422, f"images[{index}]: expected a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError, IndexError):
        raise BadRequest(422, f"images[{index}]: not valid base64") from None


async def _uploaded_files(request: Request, body: bytes) -> tuple[list[str], list[bytes]]:
    """The files of a multipart body (already read within the limit, replayed to Starlette's form parser)."""
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # noqa: BLE001 - the multipart parser's errors have no common type
        raise BadRequest(400, f"body: not a readable multipart form ({one_line(exc)[:200]})") from None
    files = [(key, value) for key, value in form.multi_items() if not isinstance(value, str)]  # str: a field
    if not files:
        raise BadRequest(422, "files: the multipart form holds no file; send each image as a file field")
    names = [value.filename or f"{key}[{i}]" for i, (key, value) in enumerate(files)]
    return names, [await value.read() for _, value in files]


def _forward(served: Served, settings: Settings) -> Callable[[np.ndarray], Awaitable[np.ndarray]]:
    """`await forward(rows)`: the rows' output numbers (dltrain.report.predictions.output_numbers, as
    dltrain-predict reads them), gathered with concurrent requests' rows into one forward pass
    (dltrain.inference.batching) unless microbatch_rows=0, then each request's own pass in a worker thread."""
    import torch

    from dltrain.report.predictions import output_numbers

    if settings.threads:
        torch.set_num_threads(settings.threads)

    def run(rows: np.ndarray) -> np.ndarray:
        return output_numbers(served.module, torch.from_numpy(rows), max(len(rows), 1))

    if settings.microbatch_rows == 0:
        return lambda rows: run_in_threadpool(run, rows)
    return MicroBatcher(run, settings.microbatch_rows, settings.microbatch_wait_ms / 1000)


def _answers(spec: Any, numbers: np.ndarray | None, kept: list[int], faults: dict[int, str], field: str,
             count: int) -> dict[str, Any]:
    """Each row's class and probabilities, or its value in the target's units, from the kept rows' output
    numbers; a row that cannot be predicted (`faults`, or an output that is not finite) gets its error."""
    from dltrain.report.predictions import left_out_line

    faults = dict(faults)
    if numbers is not None:
        faults |= {kept[i]: "the model's output for it is not finite (NaN or infinite)"
                   for i in np.flatnonzero(~np.isfinite(numbers).all(axis=1))}
    faults = dict(sorted(faults.items()))
    errors = {row: f"{field}[{row}]: {why}" for row, why in faults.items()}
    if len(errors) == count:
        raise BadRequest(422, errors[0] if count == 1 else
                         f"{field}: no row can be predicted; {left_out_line(faults, lambda row: f'{field}[{row}]')}")
    classifier = spec.task in (MULTICLASS, BINARY)
    names = spec.labels() if classifier else []
    predicted = dict(zip(kept, numbers.tolist()))
    answers = []
    for row in range(count):
        if row in errors:
            answers.append({"prediction": None, "error": errors[row]})
        elif classifier:
            values = predicted[row]
            answers.append({"prediction": names[values.index(max(values))],
                            "probabilities": {str(name): value for name, value in zip(names, values)}})
        else:
            answers.append({"prediction": predicted[row][0]})
    return {"predictions": answers, **({"errors": list(errors.values())} if errors else {})}


def app_from_environment() -> FastAPI:
    """The app for a uvicorn worker process (workers > 1), from the settings dltrain-serve put in the
    environment."""
    settings = Settings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    return create_app(load_served(settings), settings)


def settings_environment(settings: Settings) -> dict[str, str]:
    return {SETTINGS_VARIABLE: json.dumps(asdict(settings))}

