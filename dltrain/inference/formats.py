"""A trained network in the formats other tools load - ONNX, torch.export's .pt2, safetensors - each proven to
compute what the network computes: the file is run on real rows by its own runtime (onnxruntime,
torch.export.load, a network rebuilt from the safetensors weights) before anything is written. The int8 ONNX
file (onnxruntime's dynamic quantization) cannot compute the same numbers: it is checked by what its rounding
costs on the labelled rows (accuracy, or a regression's error), refused past a bound, and timed against the
float file.

Every file is made in memory and checked first, then all are written (each atomically): a format that
fails leaves no file of this export behind, and none that looks complete without having passed its check.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dltrain.data.spec import BINARY, MULTICLASS, DataSpec
from dltrain.errors import UserError, one_line
from dltrain.inference.preprocessing import INPUT_NAME, output_name

FORMATS = ("onnx", "onnx_int8", "torch_export", "safetensors")
FILES = {"onnx": "model.onnx", "onnx_int8": "model.int8.onnx", "torch_export": "model.pt2",
         "safetensors": "model.safetensors"}
NETWORK_CONFIG = "model_config.json"  # beside model.safetensors: the config and data spec that rebuild it
TOLERANCE = 1e-5  # the largest difference allowed between a file's outputs and the network's (float32)
PACKAGES = {"onnx": ("onnx", "onnxruntime", "onnxscript"), "onnx_int8": ("onnx", "onnxruntime", "onnxscript"),
            "torch_export": (), "safetensors": ("safetensors",)}
MAX_ACCURACY_DROP = 1.0  # dltrain-export's default bound on the int8 file's cost, in points of accuracy


class Calibrated(nn.Module):
    """A classifier's network with its calibration's temperature inside: logits / temperature, so that the
    softmax (or sigmoid) of every exported file's output is the calibrated probability dltrain-predict gives.
    Its weights are the network's own, under the network's own names (state_dict)."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network, self.temperature = network, float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x) / self.temperature

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.network.state_dict(*args, **kwargs)


def with_temperature(network: nn.Module, temperature: float) -> nn.Module:
    """`network` with a calibration's temperature inside (Calibrated), or as it is where there is none (1)."""
    return network if temperature == 1.0 else Calibrated(network, temperature)


class ExportError(UserError):
    """A network that cannot be written in a format, or whose file does not compute what it computes."""


@dataclass
class Exported:
    """One format's file, made in memory, with what its check measured."""

    format: str
    name: str
    content: bytes
    check: dict[str, Any]


def missing_packages(formats: list[str]) -> list[str]:
    """The packages the formats need that are not installed."""
    from dltrain.config.checks import installed

    return [name for fmt in formats for name in PACKAGES[fmt] if not installed(name)]


def export_network(network: nn.Module, spec: DataSpec, record: dict[str, Any], formats: list[str],
                   rows: Tensor, trusted: tuple[str, ...] = (), targets: Tensor | None = None,
                   max_accuracy_drop: float = MAX_ACCURACY_DROP) -> list[Exported]:
    """Each format's file of `network` (eval mode, a dynamic batch dimension), checked on `rows`; `record`:
    the config and data spec the network was built from, stored beside the safetensors weights (`trusted`:
    the callables the user vouched for when the checkpoint was opened). onnx_int8 is checked against the rows'
    `targets` instead: refused where it costs more than `max_accuracy_drop` points (see quantized_check)."""
    network = network.eval()
    reference = _in_chunks(lambda x: _inferred(network, x), rows)
    example = rows[:2] if len(rows) > 1 else rows.repeat(2, *[1] * (rows.dim() - 1))
    made = []
    for fmt in formats:
        try:
            with warnings.catch_warnings():  # torch's exporters warn about their own internals
                warnings.simplefilter("ignore")
                float_onnx = next((m for m in made if m.format == "onnx"), None) if fmt == "onnx_int8" else None
                if float_onnx is not None:  # the float file this export just made and checked
                    content, facts = _quantized(float_onnx.content, {key: float_onnx.check[key]
                                                                     for key in ("opset", "exporter")})
                else:
                    content, facts = _WRITERS[fmt](network, example, spec)
                run = _RUNNERS[fmt](content, record, trusted)
                outputs = _in_chunks(run, rows)
        except UserError:  # the weights' own config refused (rebuild_network): not the exporter's failure
            raise
        except Exception as exc:  # the exporters raise many types (torch._dynamo's, onnxscript's)
            raise ExportError(f"model={record['config']['model']['name']} cannot be exported as {fmt} "
                              f"({type(exc).__name__}: {one_line(exc)[:300]}); formats that work for it: "
                              f"{', '.join(_working(network, example, fmt)) or 'none'}") from None
        if fmt == "onnx_int8":
            timed = _latencies(facts.pop("float_file"), content, rows)
            made.append(Exported(fmt, FILES[fmt], content, facts | quantized_check(
                outputs, reference, targets, spec, max_accuracy_drop, record) | timed))
            continue
        check = facts | _compare(outputs, reference, spec)
        if not check["passed"]:
            raise ExportError(f"the {fmt} file of model={record['config']['model']['name']} does not compute what "
                              f"the checkpoint computes: its outputs differ by up to {check['max_abs_difference']:.3g} "
                              f"(allowed {TOLERANCE:g}){_classes(check)}; nothing was written")
        made.append(Exported(fmt, FILES[fmt], content, check))
    return made


def _classes(check: dict[str, Any]) -> str:
    same = check.get("same_class_rows")
    return "" if same is None else f" and give the same class on {same} of {check['rows']} rows"


def _working(network: nn.Module, example: Tensor, failed: str) -> list[str]:
    """The formats that work for a network for which `failed` did not: safetensors (weights) always does, and
    torch_export where torch.export can trace it (ONNX's dynamo exporter starts from torch.export)."""
    working = []
    if failed in ("onnx", "onnx_int8"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            working.append("torch_export")
        except Exception:  # noqa: BLE001 - any failure means it does not work
            pass
    return [fmt for fmt in (*working, "safetensors") if fmt != failed]


def _write_onnx(network: nn.Module, example: Tensor, spec: DataSpec) -> tuple[bytes, dict[str, Any]]:
    """ONNX by torch's dynamo exporter (torch.export, then onnxscript), named input and output, the batch
    dimension dynamic, weights inside the file (external_data=False: one self-contained file)."""
    import onnx

    program = torch.onnx.export(network, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[output_name(spec)], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                external_data=False, verbose=False)
    proto = program.model_proto
    onnx.checker.check_model(proto)
    opset = next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
    return proto.SerializeToString(), {"opset": int(opset), "exporter": f"torch.onnx (dynamo) {torch.__version__}"}


def _write_onnx_int8(network: nn.Module, example: Tensor, spec: DataSpec) -> tuple[bytes, dict[str, Any]]:
    """The ONNX file with its weights quantized to int8 by onnxruntime's dynamic quantization (activations
    quantized as they come, per batch): MatMul and Gemm, the dense layers, whose int8 kernels pay on a CPU;
    convolutions stay float (onnxruntime's dynamic ConvInteger has no CPU kernel as fast as its float Conv)."""
    return _quantized(*_write_onnx(network, example, spec))


def _quantized(content: bytes, facts: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """A float ONNX file's int8 twin (see _write_onnx_int8), with the figures its check reports."""
    import tempfile

    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:  # onnxruntime's quantizer reads and writes files
        source, prepared, target = (Path(folder, name) for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(content)
        quant_pre_process(source, prepared)  # shapes inferred and the graph optimized, as onnxruntime advises
        quantize_dynamic(prepared, target, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
        quantized = target.read_bytes()
    return quantized, facts | {"quantization": "onnxruntime dynamic, int8 weights (MatMul, Gemm)",
                               "float_bytes": len(content), "int8_bytes": len(quantized),
                               "size_ratio": round(len(quantized) / len(content), 4), "float_file": content}


def quantized_check(outputs: np.ndarray, reference: np.ndarray, targets: Tensor | None, spec: DataSpec,
                    bound: float, record: dict[str, Any]) -> dict[str, Any]:
    """What int8 costs on labelled rows: accuracy (in points) of the float network and of the file, for a
    classifier; for a regression the root mean squared error of both in units of the target's standard
    deviation, its rise times 100 compared with the same bound. Refused past `bound`, nothing written."""
    if targets is None or not len(targets):
        raise ExportError("onnx_int8 is checked on labelled rows, and the run's data has none to read")
    y = targets.numpy().reshape(len(targets), -1)[:, 0]
    if spec.task in (MULTICLASS, BINARY):
        predicted = (lambda out: out.argmax(axis=1)) if spec.task == MULTICLASS else (lambda out: out[:, 0] > 0)
        before, after = (float((predicted(out) == y).mean() * 100) for out in (reference, outputs))
        check = {"metric": "accuracy (%)", "float": round(before, 4), "int8": round(after, 4),
                 "drop_points": round(before - after, 4)}
    else:
        before, after = (float(np.sqrt(((out[:, 0] - y) ** 2).mean())) for out in (reference, outputs))
        check = {"metric": "RMSE (target standard deviations)", "float": round(before, 6), "int8": round(after, 6),
                 "drop_points": round((after - before) * 100, 4)}
    check |= {"rows": len(y), "max_accuracy_drop": bound, "passed": check["drop_points"] <= bound,
              "max_abs_difference": float(np.abs(outputs.astype(np.float64) - reference).max())}
    if not check["passed"]:
        raise ExportError(f"the onnx_int8 file of model={record['config']['model']['name']} costs "
                          f"{check['drop_points']:.2f} points ({check['metric']} {check['float']:g} -> {check['int8']:g} "
                          f"on {len(y)} rows), more than max_accuracy_drop={bound:g}; nothing was written (export "
                          "format=onnx, or allow more with max_accuracy_drop=...)")
    return check


def _latencies(float_file: bytes, int8_file: bytes, rows: Tensor) -> dict[str, Any]:
    """onnxruntime's median milliseconds a batch of 1 and of 256 rows, the float file against the int8 one (the
    same session options, one after the other, in this process)."""
    import time

    import onnxruntime

    timed = {}
    for name, model in (("float", float_file), ("int8", int8_file)):
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        for size in (1, 256):
            batch = rows[:size].repeat(-(-size // len(rows)), *[1] * (rows.dim() - 1))[:size].numpy()
            session.run(None, {INPUT_NAME: batch})  # the first run allocates
            seconds = []
            for _ in range(20):
                started = time.perf_counter()
                session.run(None, {INPUT_NAME: batch})
                seconds.append(time.perf_counter() - started)
            timed[f"{name}_ms_batch_{size}"] = round(float(np.median(seconds)) * 1000, 4)
    return {"latency_ms": timed}


def _run_onnx(content: bytes, record: dict[str, Any], trusted: tuple[str, ...]) -> Callable[[Tensor], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0]


def _write_torch_export(network: nn.Module, example: Tensor, spec: DataSpec) -> tuple[bytes, dict[str, Any]]:
    """torch.export's ExportedProgram, saved with torch.export.save: torch alone loads and runs it."""
    program = torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue(), {"exporter": f"torch.export {torch.__version__}"}


def _run_torch_export(content: bytes, record: dict[str, Any], trusted: tuple[str, ...]
                      ) -> Callable[[Tensor], np.ndarray]:
    program = torch.export.load(io.BytesIO(content)).module()
    return lambda x: _inferred(program, x)


def _write_safetensors(network: nn.Module, example: Tensor, spec: DataSpec) -> tuple[bytes, dict[str, Any]]:
    """The network's weights under their own names (no module prefix)."""
    from safetensors.torch import save

    tensors = {key: value.detach().contiguous() for key, value in network.state_dict().items()}
    return save(tensors, metadata={"format": "pt"}), {"config": NETWORK_CONFIG}


def _run_safetensors(content: bytes, record: dict[str, Any], trusted: tuple[str, ...]
                     ) -> Callable[[Tensor], np.ndarray]:
    from safetensors.torch import load

    network = rebuild_network(record, load(content), "the exported weights", trusted)
    return lambda x: _inferred(network, x)


def _inferred(network: Callable[[Tensor], Tensor], x: Tensor) -> np.ndarray:
    with torch.inference_mode():
        return network(x).float().numpy()


def _in_chunks(run: Callable[[Tensor], np.ndarray], rows: Tensor, size: int = 1024) -> np.ndarray:
    """`run` over `rows` a chunk at a time (a CNN's activations over a whole test split would take gigabytes)."""
    return np.concatenate([run(chunk) for chunk in rows.split(size)])


_WRITERS = {"onnx": _write_onnx, "onnx_int8": _write_onnx_int8, "torch_export": _write_torch_export,
            "safetensors": _write_safetensors}
_RUNNERS = {"onnx": _run_onnx, "onnx_int8": _run_onnx, "torch_export": _run_torch_export,
            "safetensors": _run_safetensors}


def _compare(outputs: np.ndarray, reference: np.ndarray, spec: DataSpec) -> dict[str, Any]:
    """The check's figures: rows, the largest absolute difference, rows giving the same class."""
    if outputs.shape != reference.shape:
        return {"rows": len(reference), "max_abs_difference": float("inf"), "tolerance": TOLERANCE, "passed": False,
                "shape": list(outputs.shape)}
    worst = float(np.abs(outputs.astype(np.float64) - reference).max()) if reference.size else 0.0
    check: dict[str, Any] = {"rows": len(reference), "max_abs_difference": worst, "tolerance": TOLERANCE}
    if spec.task == MULTICLASS:
        check["same_class_rows"] = int((outputs.argmax(axis=1) == reference.argmax(axis=1)).sum())
    elif spec.task == BINARY:
        check["same_class_rows"] = int(((outputs[:, 0] > 0) == (reference[:, 0] > 0)).sum())
    check["passed"] = worst <= TOLERANCE and check.get("same_class_rows", len(reference)) == len(reference)
    return check


def rebuild_network(record: dict[str, Any], weights: dict[str, Tensor], source: str, trusted: tuple[str, ...] = ()
                    ) -> nn.Module:
    """The network a config and data spec describe, holding `weights` (a safetensors file's), after the same
    checks a checkpoint gets: the config's `_target_`s against dltrain's presets, the spec's fields, and the
    weights' names, shapes and dtypes against the network built on the meta device."""
    from dltrain.training.restore import check_weights_fit
    from dltrain.models.build import build_model
    from dltrain.config.trust import check_stored_config

    if not isinstance(record, dict) or not isinstance(record.get("config"), dict) \
            or not isinstance(record.get("data_spec"), dict):
        raise ExportError(f"{source}: its {NETWORK_CONFIG} holds no config and data_spec mappings")
    record = {**record, "config": check_stored_config(record["config"], source, trusted, network_only=True)}
    state = {f"model.{key}": value for key, value in weights.items()}
    config, spec = check_weights_fit({"hyper_parameters": record, "state_dict": state}, network_only=True)
    network = build_model(config["model"], DataSpec.from_dict(spec))
    network.load_state_dict(weights, strict=True)
    temperature = record.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 < temperature < float("inf"):
        raise ExportError(f"{source}: temperature={temperature!r} is not a positive number")
    return with_temperature(network, float(temperature)).eval()


def load_safetensors(folder: str | Path, trusted: tuple[str, ...] = ()) -> nn.Module:
    """The network of an export folder's model.safetensors and model_config.json, rebuilt with dltrain (both
    files are data: see rebuild_network)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        record = json.loads((folder / NETWORK_CONFIG).read_text())
        weights = load_file(folder / FILES["safetensors"])
    except (OSError, ValueError, SafetensorError) as exc:  # JSONDecodeError is a ValueError
        raise ExportError(f"{folder}: not a readable safetensors export ({type(exc).__name__}: "
                          f"{one_line(exc)[:200]})") from None
    return rebuild_network(record, weights, str(folder / NETWORK_CONFIG), trusted)
