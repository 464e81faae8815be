"""What an input must be for a trained network, and what its outputs mean, as plain data: written beside every
export as preprocessing.json and answered by the server's /metadata, so the model can be used from any
language without dltrain. It is read off the data spec a checkpoint stores, the same one dltrain-predict
encodes with (dltrain.data.encoding, dltrain.data.images), so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from dltrain.data.inputs import missing_rule
from dltrain.data.spec import BINARY, IMAGE, MULTICLASS, SEQUENCE, TABLE, TEXT, DataSpec

FORMAT = "dltrain-preprocessing/1"
INPUT_NAME = "input"


def output_name(spec: DataSpec) -> str:
    """The exported graph's output: logits for a classifier, the standardized value for a regression."""
    return "output" if spec.task not in (MULTICLASS, BINARY) else "logits"


def describe(spec: DataSpec, config: dict[str, Any], temperature: float = 1.0) -> dict[str, Any]:
    """preprocessing.json: the input (its shape and, by kind, how raw data becomes it) and the output (with the
    calibration's temperature, which an export's files hold inside: their logits are already divided by it)."""
    data = config.get("data") or {}
    description: dict[str, Any] = {
        "format": FORMAT,
        "model": config["model"]["name"],
        "data": spec.name,
        "task": spec.task,
        "kind": spec.kind,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", *spec.input_shape]},
    }
    if spec.kind == TABLE and spec.encoder is not None:
        description["table"] = _table(spec.encoder["columns"], missing_rule(config))
        # columns of the training file the model never reads (an extra column in new rows is ignored)
        description["table"]["excluded_columns"] = list(spec.encoder.get("excluded_columns", []))
    elif spec.kind == IMAGE:
        channels, height, width = spec.input_shape
        description["image"] = {
            "height": height, "width": width, "channels": channels, "layout": "batch, channel, row, column",
            "steps": [  # in this order, as dltrain-predict reads an image file (dltrain.data.images)
                "decode to 8-bit RGB",
                f"resize to {height}x{width} pixels (bilinear, antialiased: torchvision.transforms.Resize)",
                *(["to grayscale: L = 0.299 R + 0.587 G + 0.114 B, rounded (pillow's convert('L'))"]
                  if channels == 1 else []),
                "each pixel value / 255, so inputs lie in [0, 1]",
                *([f"each channel c: (value - mean[c]) / std[c], mean {spec.normalize['mean']}, std "
                   f"{spec.normalize['std']}"] if spec.normalize else []),
            ],
        }
    elif spec.kind == TEXT:
        description["input"]["dtype"] = "int64"
        description["text"] = _text(spec.encoder)
    elif spec.kind == SEQUENCE:
        steps, features = spec.input_shape
        description["sequence"] = {"steps": steps, "features": features, "layout": "batch, step, feature"}
        if spec.encoder is None:  # a checkpoint from before sequences were standardized
            description["sequence"]["scale"] = "as the training arrays were given (no transform)"
        else:
            description["sequence"] |= {
                "mean": spec.encoder["mean"], "std": spec.encoder["std"],
                "scale": "input[row, step, feature] = (value - mean[feature]) / std[feature]: each feature's mean "
                         "and std over the training split's rows and steps"}
    description["output"] = _output(spec, data.get("target"))
    if temperature != 1.0:
        description["output"]["calibration"] = {
            "temperature": temperature, "note": "the exported files' outputs are the network's logits divided by "
                                                "the temperature (fitted on the validation split): apply the "
                                                "softmax or sigmoid to them as they are"}
    return description


def _text(encoder: dict[str, Any]) -> dict[str, Any]:
    """How a text becomes the input's token ids, as dltrain.data.text does it."""
    from dltrain.data.text import PADDING, UNKNOWN, WORD_PATTERN

    tokens = (f"the lower-cased text's words, by the regular expression {WORD_PATTERN} (scikit-learn's "
              "CountVectorizer analyzer=word)" if encoder["analyzer"] == "word" else
              "the lower-cased text's characters, runs of white space folded to one space (CountVectorizer analyzer=char)")
    return {
        "column": encoder["column"], "max_length": encoder["max_length"], "vocabulary": list(encoder["vocabulary"]),
        "steps": [tokens, f"each token's id: its position in vocabulary + 2; {UNKNOWN} for a token not in it",
                  f"the first max_length ids, after as many {PADDING} (padding) as make max_length"],
    }


def _table(columns: list[dict[str, Any]], missing: str) -> dict[str, Any]:
    """A table's columns in input order, each with the inputs it fills and its training statistics."""
    described, index = [], 0
    for column in columns:
        if column["kind"] == "numeric":
            described.append({"name": column["name"], "kind": "numeric", "index": index,
                              "mean": column["mean"], "std": column["std"]})
            index += 1
        else:
            described.append({"name": column["name"], "kind": "categorical", "index": index,
                              "categories": list(column["categories"])})
            index += len(column["categories"])
    return {
        "columns": described,
        "numeric": "input[index] = (value - mean) / std; an empty value is the mean (input 0.0)",
        "categorical": "one input per category from index on: 1.0 at index + the category's position in "
                       "categories (values compared as text), 0.0 elsewhere; an empty or unseen value is all 0.0",
        "missing": missing,
        "missing_rule": ("every value must be given: the model was trained without rows holding an empty one"
                         if missing == "drop" else "empty values are imputed as above"),
    }


def _output(spec: DataSpec, target: str | None) -> dict[str, Any]:
    if spec.task == MULTICLASS:
        return {"name": output_name(spec), "shape": ["batch", spec.num_classes], "classes": spec.labels(),
                "probabilities": "softmax over the outputs; the class is classes[argmax]"}
    if spec.task == BINARY:
        return {"name": output_name(spec), "shape": ["batch", 1], "classes": spec.labels(),
                "probabilities": "sigmoid(output) is the probability of classes[1]; the class is classes[1] "
                                 "where it is over 0.5"}
    return {"name": output_name(spec), "shape": ["batch", 1], "target": target, "mean": spec.target_mean,
            "std": spec.target_std, "prediction": "output * std + mean, in the target's own units"}
