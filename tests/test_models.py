"""Model presets: shapes from the data, the CNN's layout, dropout, activations, and task fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import read_metrics
from dltrain.config.compose import load_config
from dltrain.data.spec import BINARY, MULTICLASS, REGRESSION, DataSpec
from dltrain.errors import ConfigError
from dltrain.models.build import build_model, models_for
from dltrain.models.layers import ACTIVATIONS

IMAGES = DataSpec("digits", MULTICLASS, (1, 8, 8), num_classes=10, kind="image")
TABLE = DataSpec("table", BINARY, (13,))
SEQUENCE = DataSpec("sine", REGRESSION, (20, 1), kind="sequence")
PRESETS = ["linear", "logistic", "softmax", "mlp", "cnn", "rnn", "lstm", "gru", "conv1d", "resnet", "transformer", "torchvision"]


def preset(name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(load_config([f"model={name}", *overrides]).model, resolve=True)


@pytest.mark.parametrize(
    "name, spec, outputs",
    [
        ("mlp", IMAGES, 10), ("mlp", TABLE, 1), ("softmax", IMAGES, 10), ("logistic", TABLE, 1),
        ("linear", SEQUENCE, 1), ("cnn", IMAGES, 10), ("rnn", IMAGES, 10), ("lstm", SEQUENCE, 1),
        ("gru", TABLE, 1), ("resnet", IMAGES, 10), ("transformer", TABLE, 1), ("transformer", SEQUENCE, 1),
        ("transformer", IMAGES, 10),
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
                                          r"cnn, gru, lstm, mlp, resnet, rnn, softmax, torchvision, transformer"):
        build_model(preset("linear"), IMAGES)


def test_cnn_refuses_a_table_and_names_the_models_that_fit():
    with pytest.raises(ConfigError, match=r"model=cnn takes image input, but data=wine is a table; "
                                          r"models that fit it: gru, lstm, mlp, rnn, softmax, transformer$"):
        build_model(preset("cnn"), DataSpec("wine", MULTICLASS, (13,), num_classes=3))


@pytest.mark.parametrize("name", PRESETS)
def test_models_for_agrees_with_the_composed_presets(name):
    fits = preset(name)["fits"]
    for task in (MULTICLASS, BINARY, REGRESSION):
        assert (name in models_for(task)) == (task in fits)
    for kind in ("table", "image", "sequence"):
        assert (name in models_for(MULTICLASS, kind)) == (MULTICLASS in fits and kind in preset(name)["inputs"])


def test_the_cnn_mnist_experiment_is_the_keras_example_exactly_with_its_225034_parameters():
    from omegaconf import OmegaConf

    mnist = DataSpec("mnist", MULTICLASS, (1, 28, 28), num_classes=10, kind="image")
    model = build_model(OmegaConf.to_container(load_config(["experiment=cnn_mnist"]).model, resolve=True), mnist)
    # the example's summary rows: conv 320, conv 18,496, dense 204,928 (1600 -> 128), dense 1,290
    rows = [sum(p.numel() for p in layer.parameters()) for layer in model.modules()
            if isinstance(layer, (nn.Conv2d, nn.Linear))]
    assert rows == [320, 18_496, 204_928, 1_290] and sum(rows) == 225_034
    assert sum(p.numel() for p in model.parameters()) == 225_034
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 5 * 5 * 64)  # 26 -> 13 -> 11 -> 5, valid
    # the preset on 8x8 digits keeps its same padding
    assert preset("cnn")["padding"] == "same" and build_model(preset("cnn"), IMAGES)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm)])
def test_the_mlp_normalizes_and_adds_residuals_when_asked(norm, kind):
    plain = build_model(preset("mlp", "model.hidden_sizes=[16,16,8]"), TABLE)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for m in plain.modules())
    model = build_model(preset("mlp", "model.hidden_sizes=[16,16,8]", f"model.norm={norm}", "model.residual=true"),
                        TABLE)
    assert [m.normalized_shape[0] if kind is nn.LayerNorm else m.num_features
            for m in model.modules() if isinstance(m, kind)] == [16, 16, 8]
    residuals = [m for m in model.modules() if type(m).__name__ == "Residual"]
    assert len(residuals) == 3
    # a residual layer is its input plus its block: with the block's weights zeroed, 16 -> 16 passes x through
    same_width = residuals[1]
    with torch.no_grad():
        for p in same_width.block.parameters():
            p.zero_()
    model.eval()
    x = torch.randn(4, 16)
    assert torch.allclose(same_width(x), x + same_width.block(x)) and isinstance(same_width.skip, nn.Identity)
    assert isinstance(residuals[0].skip, nn.Linear) and residuals[0].skip.in_features == 13  # projected 13 -> 16


def test_an_mlp_with_batch_norm_and_residuals_trains_and_its_loss_falls(run):
    run_dir, results = run(["data=wine", "model=mlp", "model.hidden_sizes=[32,32]", "model.norm=batch",
                            "model.residual=true", "trainer.max_epochs=6"])
    losses = [row["train_loss"] for row in read_metrics(run_dir)]
    assert losses[-1] < 0.7 * losses[0], losses
    assert results["test"]["test_acc"] > 0.8, results["test"]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_a_torchvision_classifier_by_name_reads_the_datas_channels_and_gives_its_outputs(arch):
    model = build_model(preset("torchvision", f"model.arch={arch}"), IMAGES).eval()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs[0].in_channels == 1 and linears[-1].out_features == 10


def test_torchvision_weights_come_from_a_local_file_and_freeze_backbone_trains_only_the_new_ends(tmp_path):
    import torchvision

    original = torchvision.models.get_model("mobilenet_v3_small")  # ImageNet's layout: 3 channels, 1000 classes
    torch.save(original.state_dict(), tmp_path / "weights.pth")
    model = build_model(preset("torchvision", "model.arch=mobilenet_v3_small", f"model.weights={tmp_path / 'weights.pth'}",
                               "model.freeze_backbone=true"), IMAGES)
    kept = dict(model.net.named_parameters())
    for name, tensor in original.state_dict().items():  # every layer but the two ends is the file's
        if name in kept and kept[name].shape == tensor.shape and not name.startswith(("features.0.0", "classifier.3")):
            assert torch.equal(kept[name], tensor), name
    first = model.net.features[0][0]
    assert torch.allclose(first.weight, original.features[0][0].weight.mean(dim=1, keepdim=True))  # gray = mean RGB
    trainable = {name for name, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == {"features.0.0.weight", "classifier.3.weight", "classifier.3.bias"}


@pytest.mark.parametrize("overrides, expected", [
    (["model.arch=resnet_huge"], "model.arch='resnet_huge' is not a torchvision.models classifier"),
    (["model.weights=nowhere.pth"], "model.weights=nowhere.pth: no such file"),
    (["model.download=true"], "model.download=true downloads a named weight set: give model.weights"),
    (["model.download=true", "model.weights=V9"], "model.weights='V9' is not a weight set of resnet18: IMAGENET1K_V1"),
])
def test_torchvision_settings_that_cannot_be_meant_are_refused_in_one_line(overrides, expected):
    with pytest.raises(ConfigError, match=None) as caught:
        build_model(preset("torchvision", *overrides), IMAGES)
    assert expected in str(caught.value)


@pytest.mark.parametrize("arch", ["inception_v3", "googlenet"])
def test_a_torchvision_net_with_auxiliary_heads_gives_its_logits_in_train_mode(arch):
    """inception_v3 and googlenet return (logits, aux logits) in train mode: the backbone gives the logits the
    loss takes, the same tensor shape as in eval mode."""
    from dltrain.models.backbone import TorchvisionBackbone

    net = TorchvisionBackbone((3, 299, 299), 5, arch=arch)  # inception's own size: its aux head needs it
    x = torch.zeros(2, 3, 299, 299)
    with torch.no_grad():
        trained, evaluated = net.train()(x), net.eval()(x)
    assert isinstance(trained, torch.Tensor) and trained.shape == evaluated.shape == (2, 5)
