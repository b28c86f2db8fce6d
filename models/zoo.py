"""The model zoo: plain-torch definitions of the networks acompile is demonstrated on.

Every model is exportable to ONNX with standard ops only (Gemm/Conv/BatchNormalization/Relu/MaxPool/Add/
GlobalAveragePool), so the compiler maps its Conv/Gemm layers onto tiles and nothing else needs special
support. `default_preprocessing(name)` says how raw uint8 images become each model's input.

Choices (documented in models/README.md):
* `mlp` — 784-250-10 (Nandakumar et al. 2018/2020). They used sigmoid hidden units; ReLU is the default
  here because it trains to >= 98 % in a few CPU epochs and keeps the analog output range small;
  `build("mlp", activation="sigmoid")` gives the paper's variant. Input is flat (N, 784).
* `lenet5` — LeCun 1998 shape with ReLU and max-pooling (modern variant), 28x28x1 input (conv1 pads 2).
* `resnet32` — He et al. 2016 CIFAR ResNet: 3 stages x 5 basic blocks, widths 16/32/64, BN after every
  conv. Shortcuts are option B (1x1 conv + BN where the shape changes, identity elsewhere) by default:
  the projection is one more analog Conv, while option A (zero-padded strided identity) would need
  Slice/Pad ops in the graph. `shortcut="A"` is available for comparison with the paper's 0.46 M weights.

Sequence / attention / generative networks (MNIST, `[N, 1, 28, 28]` input like LeNet-5); their graphs
also hold LSTM, attention (MatMul/Softmax/LayerNormalization) and ConvTranspose ops:
* `lstm` — the image read as a sequence of 28 rows: nn.LSTM(28, 128, batch_first=True), the last time
  step's hidden state -> Linear(128, 10).
* `transformer` — a small ViT: 7x7 patch embedding (Conv 1->64, stride 7: 16 tokens), learned position
  embedding, 2 post-norm encoder layers (d_model 64, 4 heads, feed-forward 128, GELU, no dropout), mean
  pooling, LayerNorm, Linear(64, 10).
* `autoencoder` — conv encoder (1->16->32, stride 2), Linear bottleneck 1568->64->1568, ConvTranspose
  decoder (32->16->1, stride 2); sigmoid, then the MNIST normalization, so the reconstruction is in the
  input's own (normalized) space: `lenet5(autoencoder(x))` needs nothing in between. Trained with MSE
  against its input (`task = "reconstruct"`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from runtime.data import Preprocessing
from runtime.data import default_preprocessing as dataset_preprocessing
from runtime.errors import AcompileError

__all__ = [
    "MODELS",
    "build",
    "default_preprocessing",
    "default_dataset",
    "task",
    "MLP",
    "LeNet5",
    "CifarResNet",
    "LSTMClassifier",
    "TinyViT",
    "ConvAutoencoder",
]


class MLP(nn.Module):
    """784-250-10 perceptron; layers `fc1`, `fc2` (names are part of the contract)."""

    def __init__(
        self, in_features: int = 784, hidden: int = 250, num_classes: int = 10, activation: str = "relu"
    ) -> None:
        super().__init__()
        acts: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}
        if activation not in acts:
            raise AcompileError(f"mlp: activation must be relu or sigmoid, got {activation!r}")
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = acts[activation]()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:  # accept (N, 1, 28, 28) too; the exported graph stays Gemm-Relu-Gemm
            x = x.flatten(1)
        return self.fc2(self.act(self.fc1(x)))


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 grayscale: conv(6,5x5,pad 2)-pool-conv(16,5x5)-pool-fc120-fc84-fc10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class _ShortcutA(nn.Module):
    """Option A: strided identity, extra channels zero-padded (no weights)."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) - ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if shortcut == "A":
                self.shortcut = _ShortcutA(out_ch - in_ch, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR ResNet (depth = 6n + 2): conv-BN-ReLU, 3 stages of n blocks, GAP, fc."""

    def __init__(
        self,
        depth: int = 32,
        widths: tuple[int, int, int] = (16, 32, 64),
        num_classes: int = 10,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise AcompileError(f"resnet: depth must be 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise AcompileError(f"resnet: shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride, shortcut))
                in_ch = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class LSTMClassifier(nn.Module):
    """Rows of a 28x28 image as a 28-step sequence: LSTM(28, hidden) -> last hidden state -> fc."""

    def __init__(self, rows: int = 28, cols: int = 28, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols
        self.lstm = nn.LSTM(cols, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.rows, self.cols)  # [N, 1, 28, 28] -> [N, 28 steps, 28 features]
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


class TinyViT(nn.Module):
    """ViT-style classifier: patch embedding conv, learned position embedding, TransformerEncoder,
    mean pooling over tokens, LayerNorm, fc."""

    def __init__(
        self,
        image: int = 28,
        patch: int = 7,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        ff: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=ff, dropout=0.0, batch_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # [N, 16, 64]
        x = self.encoder(x)
        return self.fc(self.norm(x.mean(1)))


class ConvAutoencoder(nn.Module):
    """Conv encoder -> Linear bottleneck -> ConvTranspose decoder -> sigmoid (pixels in [0, 1]) ->
    (p - mean) / std: the output lives in the normalized input space of the MNIST models."""

    task = "reconstruct"

    def __init__(self, latent: int = 64, mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.enc1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)  # 14x14
        self.enc2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)  # 7x7
        self.fc_enc = nn.Linear(32 * 7 * 7, latent)
        self.fc_dec = nn.Linear(latent, 32 * 7 * 7)
        self.dec1 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)  # 14x14
        self.dec2 = nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1)  # 28x28
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.enc2(self.relu(self.enc1(x))))
        z = self.fc_enc(x.flatten(1))  # linear bottleneck
        x = self.relu(self.fc_dec(z)).reshape(-1, 32, 7, 7)
        x = torch.sigmoid(self.dec2(self.relu(self.dec1(x))))
        return (x - self.mean) / self.std


# name -> (builder, default dataset, input layout)
MODELS: dict[str, tuple[Callable[..., nn.Module], str, str]] = {
    "mlp": (MLP, "mnist", "flat"),
    "lenet5": (LeNet5, "mnist", "NCHW"),
    "resnet20": (lambda **kw: CifarResNet(depth=20, **kw), "cifar10", "NCHW"),
    "resnet32": (lambda **kw: CifarResNet(depth=32, **kw), "cifar10", "NCHW"),
    "lstm": (LSTMClassifier, "mnist", "NCHW"),
    "transformer": (TinyViT, "mnist", "NCHW"),
    "autoencoder": (ConvAutoencoder, "mnist", "NCHW"),
}


def _entry(name: str) -> tuple[Callable[..., nn.Module], str, str]:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise AcompileError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}") from None


def build(name: str, **kw) -> nn.Module:
    """A freshly initialized model of the zoo (train mode); keyword arguments go to its constructor."""
    builder, _, _ = _entry(name)
    try:
        return builder(**kw)
    except TypeError as exc:
        raise AcompileError(f"model {name!r}: bad option ({exc})") from exc


def default_dataset(name: str) -> str:
    """The dataset a zoo model is meant for (mnist for mlp/lenet5, cifar10 for the ResNets)."""
    return _entry(name)[1]


def task(name: str) -> str:
    """"classify" (cross-entropy on labels) or "reconstruct" (MSE against the input: `autoencoder`)."""
    builder, _, _ = _entry(name)
    return getattr(builder, "task", "classify")


def default_preprocessing(name: str, dataset: str | None = None) -> Preprocessing:
    """How uint8 images of `dataset` (default: the model's own) become this model's input tensor."""
    _, ds, layout = _entry(name)
    return dataset_preprocessing(dataset or ds, layout=layout)


def example_input(name: str, batch: int = 2, dataset: str | None = None) -> torch.Tensor:
    """A random input of the right shape, for export and smoke tests."""
    pre = default_preprocessing(name, dataset)
    c, h, w = pre.input_shape
    shape = (batch, c * h * w) if pre.layout == "flat" else (batch, c, h, w)
    return torch.randn(shape)
