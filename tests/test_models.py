"""Model presets: shapes from the data, the CNN's layout, dropout, activations, and task fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltrain.config import load_config
from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION, DataSpec
from dltrain.errors import ConfigError
from dltrain.models.build import build_model, models_for
from dltrain.models.layers import ACTIVATIONS

IMAGES = DataSpec("digits", MULTICLASS, (1, 8, 8), num_classes=10, kind="image")
TABLE = DataSpec("table", BINARY, (13,))
SEQUENCE = DataSpec("sine", REGRESSION, (20, 1), kind="sequence")
PRESETS = ["linear", "logistic", "softmax", "mlp", "cnn", "rnn", "lstm", "gru"]


def preset(name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(load_config([f"model={name}", *overrides]).model, resolve=True)


@pytest.mark.parametrize(
    "name, spec, outputs",
    [
        ("mlp", IMAGES, 10), ("mlp", TABLE, 1), ("softmax", IMAGES, 10), ("logistic", TABLE, 1),
        ("linear", SEQUENCE, 1), ("cnn", IMAGES, 10), ("rnn", IMAGES, 10), ("lstm", SEQUENCE, 1),
        ("gru", TABLE, 1),
    ],
)
def test_output_size_comes_from_the_data(name, spec, outputs):
    model = build_model(preset(name), spec)
    assert model(torch.randn(5, *spec.input_shape)).shape == (5, outputs)


def test_cnn_preset_is_the_keras_mnist_layout():
    model = build_model(preset("cnn"), IMAGES)
    kinds = [type(m).__name__ for m in [*model.features, *model.head]]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
                     "Linear", "ReLU", "Dropout", "Linear"]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (3, 3)), (64, (3, 3))]
    assert model.head[0].out_features == 128 and model.head[2].p == 0.5


def test_mlp_preset_has_hidden_layers_128_and_64_with_relu():
    model = build_model(preset("mlp"), IMAGES)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 64), (64, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2


@pytest.mark.parametrize("name", ["linear", "logistic", "softmax"])
def test_regression_presets_are_one_linear_layer(name):
    spec = {"linear": SEQUENCE, "logistic": TABLE, "softmax": IMAGES}[name]
    model = build_model(preset(name), spec)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_is_a_key(activation):
    model = build_model(preset("mlp", f"model.activation={activation}"), IMAGES)
    assert any(isinstance(m, ACTIVATIONS[activation]) for m in model.modules())


def test_depth_and_hidden_sizes_are_keys():
    model = build_model(preset("lstm", "model.num_layers=3", "model.hidden_size=16"), SEQUENCE)
    assert model.rnn.num_layers == 3 and model.rnn.hidden_size == 16
    model = build_model(preset("mlp", "model.hidden_sizes=[7,5,3]"), TABLE)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [7, 5, 3, 1]


def test_dropout_is_active_in_training_and_off_in_evaluation():
    model = build_model(preset("mlp", "model.dropout=0.5"), IMAGES)
    x = torch.randn(8, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_a_model_that_does_not_fit_the_task_is_refused_with_the_models_that_do():
    with pytest.raises(ConfigError, match=r"model=linear fits regression .* multiclass task; models that fit it: "
                                          r"cnn, gru, lstm, mlp, rnn, softmax"):
        build_model(preset("linear"), IMAGES)


def test_cnn_refuses_a_table_and_names_the_models_that_fit():
    with pytest.raises(ConfigError, match=r"model=cnn takes image input, but data=wine is a table; "
                                          r"models that fit it: gru, lstm, mlp, rnn, softmax$"):
        build_model(preset("cnn"), DataSpec("wine", MULTICLASS, (13,), num_classes=3))


@pytest.mark.parametrize("name", PRESETS)
def test_models_for_agrees_with_the_composed_presets(name):
    fits = preset(name)["fits"]
    for task in (MULTICLASS, BINARY, REGRESSION):
        assert (name in models_for(task)) == (task in fits)
    for kind in ("table", "image", "sequence"):
        assert (name in models_for(MULTICLASS, kind)) == (MULTICLASS in fits and kind in preset(name)["inputs"])
