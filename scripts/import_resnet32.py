"""Bundle Idelbayev's pretrained ResNet-32 (CIFAR-10) as an acompile ONNX model.

    python scripts/import_resnet32.py [--npz ../shared/pretrained/resnet32-cifar10-idelbayev.npz]
                                      [-o models/resnet32-cifar10-plain.onnx]

Rebuilds the original architecture (Yerlan Idelbayev, "Proper ResNet Implementation for CIFAR10/CIFAR100
in PyTorch", 2018, BSD 2-Clause; module names as in the original `resnet.py`, option-A shortcuts), loads
the weights from the npz (no pickle), checks the weight count, and exports ONNX opset 17 with
BatchNormalization kept as nodes and a dynamic batch dimension. The metadata carries the preprocessing
(`acompile.preprocessing`) and where the weights come from (`acompile.source`). The export is checked
against torch with onnxruntime. The file is written atomically and only replaced when its bytes change,
so running the script twice leaves the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runtime import contract  # noqa: E402
from runtime.data import PREPROCESSING_KEY, Preprocessing  # noqa: E402

SOURCE_KEY = contract.META_SOURCE
DEFAULT_NPZ = REPO.parent / "shared" / "pretrained" / "resnet32-cifar10-idelbayev.npz"
DEFAULT_OUT = REPO / "models" / "resnet32-cifar10-plain.onnx"
N_WEIGHTS = 461_872  # conv + linear weights (no biases, no BN)
N_BN, N_CONV, N_GEMM = 31, 31, 1
ATOL = 1e-4

PREPROCESSING = Preprocessing(
    layout="NCHW", scale=1.0 / 255.0, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
    input_shape=[3, 32, 32], dataset="cifar10",
)
SOURCE = {
    "author": "Yerlan Idelbayev",
    "title": "Proper ResNet Implementation for CIFAR10/CIFAR100 in PyTorch",
    "year": 2018,
    "repository": "https://github.com/akamaster/pytorch_resnet_cifar10",
    "licence": "BSD-2-Clause",
    "licence_file": "LICENSE-resnet32",
    "source_file": "pretrained_models/resnet32-d509ac18.th",
    "source_sha256": "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    "reported_test_accuracy": 0.9263,
    "converted_by": "scripts/import_resnet32.py",
}


# --- the original architecture (module names and forward as in Idelbayev's resnet.py) ---------------

class LambdaLayer(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # option A: subsample, then zero-pad planes//4 channels on each side (no weights)
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, num_blocks: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def resnet32() -> ResNet:
    return ResNet([5, 5, 5])


# --- conversion --------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    from hwtrain.finetune import file_sha256

    return file_sha256(path)


def load_weights(model: nn.Module, npz: Path) -> None:
    """Copy every tensor of the npz into the model; every model tensor must be set, nothing left over."""
    with np.load(npz, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files if not k.endswith("num_batches_tracked")}
    state = model.state_dict()
    wanted = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(wanted - set(arrays)), sorted(set(arrays) - wanted)
    if missing or extra:
        sys.exit(f"{npz}: keys do not match the architecture (missing {missing[:5]}, unexpected {extra[:5]})")
    for k in sorted(wanted):
        if tuple(arrays[k].shape) != tuple(state[k].shape):
            sys.exit(f"{npz}: {k} has shape {arrays[k].shape}, the model wants {tuple(state[k].shape)}")
        state[k] = torch.from_numpy(np.array(arrays[k], dtype=np.float32))
    model.load_state_dict(state)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    if n != N_WEIGHTS:
        sys.exit(f"conv/linear weight count {n:,} != {N_WEIGHTS:,}")


def export(model: nn.Module, path: Path, npz_sha: str) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (x,), str(path), dynamo=False, opset_version=17,
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
    proto = onnx.load(str(path))
    proto.graph.name = "resnet32-cifar10-idelbayev"
    source = dict(SOURCE, npz="resnet32-cifar10-idelbayev.npz", npz_sha256=npz_sha)
    contract.set_metadata(proto, {PREPROCESSING_KEY: PREPROCESSING.to_json(),
                                  SOURCE_KEY: json.dumps(source, sort_keys=True)})
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    counts = {op: ops.count(op) for op in ("BatchNormalization", "Conv", "Gemm")}
    if counts != {"BatchNormalization": N_BN, "Conv": N_CONV, "Gemm": N_GEMM}:
        sys.exit(f"unexpected graph: {counts} (want {N_BN} BN, {N_CONV} Conv, {N_GEMM} Gemm)")
    onnx.save(proto, str(path))
    verify(model, path)


def verify(model: nn.Module, path: Path) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for n in (1, 7):
        x = torch.randn(n, 3, 32, 32, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        if got.shape != ref.shape:
            sys.exit(f"onnxruntime output shape {got.shape} != torch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > ATOL:
        sys.exit(f"onnxruntime differs from torch by {worst:.2e} (> {ATOL:.0e})")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="the converted checkpoint")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not args.npz.exists():
        sys.exit(f"{args.npz}: not found")
    torch.manual_seed(0)
    model = resnet32()
    load_weights(model, args.npz)
    model.eval()
    out: Path = args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export(model, tmp, sha256(args.npz))
        if out.exists() and out.read_bytes() == tmp.read_bytes():
            print(f"{out}: up to date")
            return
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {N_WEIGHTS:,} conv/linear weights)")


if __name__ == "__main__":
    main()
