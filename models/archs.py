"""Reference network architectures (randomly initialized, deterministic), written in plain torch (no
torchvision), plus an ONNX exporter. The tests and the benchmarks (bench/) share them.

Every builder returns ``(torch_model, example_input)`` with the model in eval mode. The runtime and
compiler tests share these, so changing a shape here changes hand-computed tile counts in the tests.

    model, x = resnet_cifar(depth=20)
    export(model, x, tmp_path / "r20.onnx")            # legacy exporter, opset 17, BN kept as nodes
    export(model, x, tmp_path / "r20d.onnx", dynamo=True)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from models.zoo import CifarResNet

__all__ = [
    "export",
    "resnet50",
    "resnet50_small",
    "mobilenet",
    "mlp_matmul",
    "vgg",
    "resnet_cifar",
    "ARCHS",
]


def _init(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights, non-trivial BN statistics (so BN is not an identity), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.01)
            elif isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(1.0 + 0.1 * torch.randn(n, generator=gen))
                mod.bias.copy_(0.1 * torch.randn(n, generator=gen))
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                mod.running_var.copy_(1.0 + 0.1 * torch.rand(n, generator=gen))
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# ResNet-50 style (bottleneck blocks, ImageNet stem)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


class BottleneckResNet(nn.Module):
    def __init__(self, blocks=(3, 4, 6, 3), base: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers = []
        in_ch = base
        for i, n in enumerate(blocks):
            width = base * 2**i
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(Bottleneck(in_ch, width, stride))
                in_ch = width * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet50(image: int = 224, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Full ResNet-50 shapes (He et al. 2016): 25,557,032 parameters, 25,502,912 conv/fc weights."""
    model = _init(BottleneckResNet((3, 4, 6, 3), 64, 1000), seed)
    return model, torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(seed + 1))


def resnet50_small(image: int = 32, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """ResNet-50 topology (3,4,6,3 bottlenecks) at 1/8 width (base 8) and 10 classes: fast tests."""
    model = _init(BottleneckResNet((3, 4, 6, 3), 8, 10), seed)
    return model, torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(seed + 1))


# ---------------------------------------------------------------------------------------------------
# MobileNet-style (depthwise separable)


def _dw_sep(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU6(),
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


class MobileNetLike(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(
            _dw_sep(32, 64, 1), _dw_sep(64, 128, 2), _dw_sep(128, 128, 1), _dw_sep(128, 256, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def mobilenet(image: int = 32, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Stem conv 3->32 (s2), 4 depthwise-separable blocks (dw 3x3 + pw 1x1), fc 256->10."""
    model = _init(MobileNetLike(), seed)
    return model, torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(seed + 1))


# ---------------------------------------------------------------------------------------------------
# MLP written with MatMul + Add (no nn.Linear -> exporter emits MatMul, not Gemm)


class MatMulMLP(nn.Module):
    def __init__(self, sizes=(784, 300, 100, 10)) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(b)) for b in sizes[1:]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.matmul(x, w) + b
            if i < n - 1:
                x = torch.relu(x)
        return x


def mlp_matmul(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """784-300-100-10 MLP with weights stored [fan_in, fan_out] and ``x @ W + b`` (MatMul + Add)."""
    model = MatMulMLP()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in model.weights:
            w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / w.shape[0]) ** 0.5)
        for b in model.biases:
            b.copy_(torch.randn(b.shape, generator=gen) * 0.01)
    return model.eval(), torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1))


# ---------------------------------------------------------------------------------------------------
# VGG-style (plain 3x3 convs, max pooling, two fc layers)


class VGGLike(nn.Module):
    def __init__(self, cfg=(64, 64, "M", 128, 128, "M", 256, 256, "M"), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(in_ch * 4 * 4, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


def vgg(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """VGG-style CIFAR net, 32x32 input: convs 3-64-64-M-128-128-M-256-256-M, fc 4096-512-10."""
    model = _init(VGGLike(), seed)
    return model, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))


# ---------------------------------------------------------------------------------------------------
# ResNet-20/32 CIFAR (He et al. 2016 §4.2), BN after every conv, option-B 1x1 projection shortcuts


def resnet_cifar(depth: int = 20, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """ResNet-20 (depth=20) / ResNet-32 (depth=32) for 32x32 CIFAR input: the model zoo's own net."""
    model = _init(CifarResNet(depth), seed)
    return model, torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))


ARCHS = {
    "resnet50": resnet50,
    "resnet50_small": resnet50_small,
    "mobilenet": mobilenet,
    "mlp_matmul": mlp_matmul,
    "vgg": vgg,
    "resnet20": lambda seed=0: resnet_cifar(20, seed),
    "resnet32": lambda seed=0: resnet_cifar(32, seed),
}


# ---------------------------------------------------------------------------------------------------


def export(model: nn.Module, x: torch.Tensor, path: str | Path, dynamo: bool = False, opset: int = 17,
           dynamic_batch: bool = False) -> Path:
    """Export to ONNX with BatchNormalization kept as nodes (input ``input``, output ``output``).

    Legacy exporter (``dynamo=False``): constant folding is off, because in eval mode it fuses BN into
    the preceding Conv. Dynamo exporter: its optimizer fuses BN too, so it runs with ``optimize=False``
    (the graph then holds Shape/Expand/CastLike chains that the compiler's frontend folds), at opset
    ``max(opset, 18)`` because its down-conversion to 17 fails on some graphs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    kwargs: dict = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
            kwargs["opset_version"] = max(opset, 18)
            onnx_program = torch.onnx.export(model, (x,), dynamo=True, optimize=False, verbose=False,
                                             **kwargs)
            onnx_program.save(str(path))
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
            torch.onnx.export(model, (x,), str(path), dynamo=False, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL, **kwargs)
    return path
