"""Any torchvision.models classifier by name, its input channels and outputs fitted to the data.

The network is torchvision's own (`torchvision.models.get_model`); dltrain changes only its two ends: a
first convolution that reads the data's channels (its pretrained filters averaged over the RGB ones, so a
grayscale image sees what it would as gray RGB) and a last linear layer with the data's outputs. Weights
come from a file the user names (a state dict, as torch.save(model.state_dict()) writes it) or, only when
model.download=true, from torchvision's own download of a named weight set: never fetched without asking.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from dltrain.errors import ConfigError
from dltrain.config.schema import Name


class TorchvisionBackbone(nn.Module):
    """torchvision.models.<arch>, first convolution and output layer fitted to the data; freeze_backbone=true
    trains only the ends dltrain replaced."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, *, arch: Name = "resnet18",
                 weights: str | None = None, download: bool = False, freeze_backbone: bool = False) -> None:
        super().__init__()
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            known = ", ".join(torchvision.models.list_models(module=torchvision.models)[:8])
            raise ConfigError(f"model.arch={arch!r} is not a torchvision.models classifier; e.g. {known}, ...")
        self.net = torchvision.models.get_model(arch, weights=_weight_set(arch, weights, download))
        if weights and not download:
            self.net.load_state_dict(_state_dict(weights, arch))
        first, last = _first(self.net, nn.Conv2d), _last(self.net, nn.Linear)
        replaced = []
        if first[1].in_channels != input_shape[0]:
            replaced.append(_set(self.net, first[0], _with_channels(first[1], input_shape[0])))
        replaced.append(_set(self.net, last[0], nn.Linear(last[1].in_features, num_outputs)))
        if freeze_backbone:
            kept = {id(p) for module in replaced for p in module.parameters()}
            for parameter in self.net.parameters():
                parameter.requires_grad_(id(parameter) in kept)

    def forward(self, x: Tensor) -> Tensor:
        """The network's logits; inception_v3 and googlenet in train mode return them beside their auxiliary
        heads' (InceptionOutputs, GoogLeNetOutputs), which the loss does not use."""
        out = self.net(x)
        return out.logits if hasattr(out, "logits") else out


def _weight_set(name: str, weights: str | None, download: bool):
    """The torchvision weight set to download (model.download=true and a set's name), else None."""
    if not download:
        return None
    if not weights:
        raise ConfigError("model.download=true downloads a named weight set: give model.weights, e.g. DEFAULT or "
                          "IMAGENET1K_V1")
    import torchvision

    try:
        return torchvision.models.get_model_weights(name)[weights] if weights != "DEFAULT" else "DEFAULT"
    except KeyError:
        sets = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise ConfigError(f"model.weights={weights!r} is not a weight set of {name}: {sets} or DEFAULT") from None


def _state_dict(path: str, name: str) -> dict[str, Tensor]:
    """A weights file read as data (tensors only), for the full torchvision network it was saved from."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights={path}: no such file (a state dict of torchvision's {name}, or a weight "
                          "set's name with model.download=true)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.weights={path} is not a readable state dict: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"model.weights={path} holds no state dict (names to tensors)")
    return state


def _first(net: nn.Module, kind: type) -> tuple[str, nn.Module]:
    return next((n, m) for n, m in net.named_modules() if isinstance(m, kind))


def _last(net: nn.Module, kind: type) -> tuple[str, nn.Module]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, kind)][-1]


def _set(net: nn.Module, dotted: str, module: nn.Module) -> nn.Module:
    parent, _, attr = dotted.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, module)
    return module


def _with_channels(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """The same convolution reading `channels` inputs; its filters the mean of the old ones over theirs."""
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
