"""Neural-network ops: convolutions, GEMM, pooling, normalization, activations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from runtime.ops.registry import NodeInfo, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def same_pads(auto_pad: str, size: list[int], k: list[int], s: list[int], d: list[int]) -> list[int]:
    """ONNX SAME_UPPER / SAME_LOWER padding as [begin..., end...]."""
    begin, end = [], []
    for n, kk, ss, dd in zip(size, k, s, d, strict=False):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        small = total // 2
        if auto_pad == "SAME_UPPER":
            begin.append(small)
            end.append(total - small)
        else:
            begin.append(total - small)
            end.append(small)
    return begin + end


def torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, .., e1, e2, ..] (spatial dims) -> F.pad order (last dim first)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


class _Padder:
    """Resolve ONNX padding (explicit, auto_pad) once or per input size; symmetric pads go to torch."""

    def __init__(self, node: NodeInfo, nspatial: int, k: list[int], s: list[int], d: list[int]):
        self.auto = node.attrs.get("auto_pad", "NOTSET")
        if isinstance(self.auto, bytes):
            self.auto = self.auto.decode()
        self.pads = list(node.attrs.get("pads", [0] * (2 * nspatial)))
        self.k, self.s, self.d, self.n = k, s, d, nspatial

    def __call__(self, x: torch.Tensor) -> tuple[list[int] | None, list[int]]:
        """-> (F.pad argument or None, symmetric padding for the op)."""
        if self.auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = same_pads(self.auto, list(x.shape[-self.n:]), self.k, self.s, self.d)
        elif self.auto == "VALID":
            pads = [0] * (2 * self.n)
        else:
            pads = self.pads
        if pads[: self.n] == pads[self.n:]:
            return None, pads[: self.n]
        return torch_pad(pads), [0] * self.n


@register("Conv")
def conv(node: NodeInfo):
    w = node.const(1)
    if w is None:
        k = list(node.attrs.get("kernel_shape", []))
        if not k:
            raise node.error("Conv with a non-constant weight needs kernel_shape")
    else:
        k = list(node.attrs.get("kernel_shape", w.shape[2:]))
    n = len(k)
    s = list(node.attrs.get("strides", [1] * n))
    d = list(node.attrs.get("dilations", [1] * n))
    g = int(node.attrs.get("group", 1))
    fn = _CONV.get(n)
    if fn is None:
        raise node.error(f"{n}-D convolution is not supported")
    padder = _Padder(node, n, k, s, d)

    def run(x, w, b=None):
        fpad, p = padder(x)
        if fpad is not None:
            x = F.pad(x, fpad)
        return fn(x, w, b, s, p, d, g)

    return run


@register("ConvTranspose")
def conv_transpose(node: NodeInfo):
    a = node.attrs
    g = int(a.get("group", 1))
    auto = a.get("auto_pad", "NOTSET")
    if "output_shape" in a or auto not in ("NOTSET", "VALID"):
        raise node.error("output_shape / auto_pad SAME are not supported")

    def run(x, w, b=None):
        n = w.dim() - 2
        s = list(a.get("strides", [1] * n))
        d = list(a.get("dilations", [1] * n))
        opad = list(a.get("output_padding", [0] * n))
        pads = list(a.get("pads", [0] * (2 * n)))
        if pads[:n] != pads[n:]:
            raise node.error("asymmetric pads are not supported")
        return _CONVT[n](x, w, b, s, pads[:n], opad, g, d)

    return run


@register("Gemm")
def gemm(node: NodeInfo):
    a = float(node.attrs.get("alpha", 1.0))
    be = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))

    def run(x, w, c=None):
        if ta:
            x = x.t()
        if tb:
            w = w.t()
        y = x @ w
        if a != 1.0:
            y = y * a
        if c is not None:
            y = y + (c * be if be != 1.0 else c)
        return y

    return run


@register("MatMul")
def matmul(node: NodeInfo):
    return torch.matmul


def _pool_common(node: NodeInfo):
    k = list(node.attrs["kernel_shape"])
    n = len(k)
    s = list(node.attrs.get("strides", [1] * n))
    d = list(node.attrs.get("dilations", [1] * n))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    return k, n, s, d, ceil


@register("MaxPool")
def max_pool(node: NodeInfo):
    k, n, s, d, ceil = _pool_common(node)
    if node.n_outputs > 1:
        raise node.error("the Indices output is not supported")
    if int(node.attrs.get("storage_order", 0)):
        raise node.error("storage_order=1 is not supported")
    padder = _Padder(node, n, k, s, d)
    fn = _MAXPOOL[n]

    def run(x):
        fpad, p = padder(x)
        if fpad is not None or any(2 * pp > kk for pp, kk in zip(p, k, strict=False)):
            x = F.pad(x, fpad if fpad is not None else torch_pad(p + p), value=-math.inf)
            p = [0] * n
        return fn(x, k, s, p, d, ceil_mode=ceil)

    return run


@register("AveragePool")
def avg_pool(node: NodeInfo):
    k, n, s, d, ceil = _pool_common(node)
    if any(dd != 1 for dd in d):
        raise node.error("dilations are not supported")
    include = bool(node.attrs.get("count_include_pad", 0))
    padder = _Padder(node, n, k, s, d)
    fn = _AVGPOOL[n]

    def run(x):
        fpad, p = padder(x)
        if fpad is None and all(2 * pp <= kk for pp, kk in zip(p, k, strict=False)) and not (ceil and any(p)):
            return fn(x, k, s, p, ceil_mode=ceil, count_include_pad=include)
        if fpad is None:
            fpad = torch_pad(p + p)
        xp = F.pad(x, fpad)
        num = fn(xp, k, s, 0, ceil_mode=ceil, count_include_pad=False)
        if include:  # ONNX counts pads, but not window parts beyond the padded edge (ceil_mode)
            return num
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        return num / fn(F.pad(ones, fpad), k, s, 0, ceil_mode=ceil, count_include_pad=False)

    return run


@register("GlobalAveragePool")
def global_avg_pool(node: NodeInfo):
    def run(x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    return run


@register("GlobalMaxPool")
def global_max_pool(node: NodeInfo):
    def run(x):
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)

    return run


class BatchNorm:
    """Inference BatchNormalization whose statistics the `bn` compensation can re-estimate.

    In `calibrating` mode it normalizes with batch statistics (as training-mode BN would) and
    accumulates per-channel sums, so later BNs see the recalibrated earlier ones (Joshi et al. 2020).
    """

    def __init__(self, node: NodeInfo):
        self.name = node.name
        self.eps = float(node.attrs.get("epsilon", 1e-5))
        self.override: tuple[torch.Tensor, torch.Tensor] | None = None
        self.calibrating = False
        self._sum = self._sq = None
        self._count = 0
        if node.n_outputs > 1 and int(node.attrs.get("training_mode", 0)):
            raise node.error("training_mode=1 is not supported")

    def start_calibration(self) -> None:
        self.calibrating, self._sum, self._sq, self._count = True, None, None, 0

    def finish_calibration(self) -> None:
        if self._count:
            mean = self._sum / self._count
            var = (self._sq / self._count - mean * mean).clamp_min(0)
            self.override = (mean, var)
        self.calibrating = False

    def reset(self) -> None:
        self.override, self.calibrating = None, False

    def __call__(self, x, scale, bias, mean, var):
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.calibrating:
            dims = [0] + list(range(2, x.dim()))
            xd = x.double()
            s, sq = xd.sum(dims), (xd * xd).sum(dims)
            cnt = x.numel() // x.shape[1]
            self._sum = s if self._sum is None else self._sum + s
            self._sq = sq if self._sq is None else self._sq + sq
            self._count += cnt
            mean = (s / cnt).to(x.dtype)
            var = (sq / cnt - (s / cnt) ** 2).clamp_min(0).to(x.dtype)
            inv = scale / torch.sqrt(var + self.eps)
            return x * inv.reshape(shape) + (bias - mean * inv).reshape(shape)
        inv, shift = self.affine(scale, bias, mean, var)
        return torch.addcmul(shift.reshape(shape), x, inv.reshape(shape))

    def affine(self, scale, bias, mean, var) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference BN as y = x * inv + shift per channel (recalibrated statistics when set), so an
        analog tile can fold it into its digital rescale."""
        if self.override is not None:
            mean, var = (t.to(scale.dtype) for t in self.override)
        inv = scale / torch.sqrt(var + self.eps)
        return inv, bias - mean * inv


@register("BatchNormalization")
def batch_norm(node: NodeInfo):
    bn = BatchNorm(node)
    node.extra["bn"] = bn
    return bn


@register("InstanceNormalization")
def instance_norm(node: NodeInfo):
    eps = float(node.attrs.get("epsilon", 1e-5))

    def run(x, scale, bias):
        return F.instance_norm(x, weight=scale, bias=bias, eps=eps)

    return run


@register("LayerNormalization")
def layer_norm(node: NodeInfo):
    axis = int(node.attrs.get("axis", -1))
    eps = float(node.attrs.get("epsilon", 1e-5))
    if node.n_outputs > 1:
        raise node.error("Mean / InvStdDev outputs are not supported")

    def run(x, scale, bias=None):
        ax = axis % x.dim()
        return F.layer_norm(x, x.shape[ax:], scale.expand(x.shape[ax:]),
                            None if bias is None else bias.expand(x.shape[ax:]), eps)

    return run


@register("Dropout")
def dropout(node: NodeInfo):
    def run(x, *rest):
        if node.n_outputs > 1:
            return x, torch.ones_like(x, dtype=torch.bool)
        return x

    return run


def _softmax_like(fn):
    def conv(node: NodeInfo):
        axis = int(node.attrs.get("axis", -1 if node.opset >= 13 else 1))
        if node.opset >= 13:
            return lambda x: fn(x, dim=axis)

        def run(x):
            ax = axis % x.dim()
            shp = x.shape
            return fn(x.reshape(*shp[:ax], -1), dim=-1).reshape(shp) if ax else fn(
                x.reshape(1, -1), dim=-1).reshape(shp)

        return run

    return conv


register("Softmax")(_softmax_like(torch.softmax))
register("LogSoftmax")(_softmax_like(torch.log_softmax))


@register("Relu")
def relu(node: NodeInfo):
    return torch.relu


@register("Sigmoid")
def sigmoid(node: NodeInfo):
    return torch.sigmoid


@register("Tanh")
def tanh(node: NodeInfo):
    return torch.tanh


@register("LeakyRelu")
def leaky_relu(node: NodeInfo):
    a = float(node.attrs.get("alpha", 0.01))
    return lambda x: F.leaky_relu(x, a)


@register("Elu")
def elu(node: NodeInfo):
    a = float(node.attrs.get("alpha", 1.0))
    return lambda x: F.elu(x, a)


@register("Selu")
def selu(node: NodeInfo):
    a = float(node.attrs.get("alpha", 1.67326319217681884765625))
    g = float(node.attrs.get("gamma", 1.05070102214813232421875))
    return lambda x: g * torch.where(x > 0, x, a * (torch.exp(x) - 1))


@register("HardSigmoid")
def hard_sigmoid(node: NodeInfo):
    a = float(node.attrs.get("alpha", 0.2))
    b = float(node.attrs.get("beta", 0.5))
    return lambda x: torch.clamp(x * a + b, 0, 1)


@register("HardSwish")
def hard_swish(node: NodeInfo):
    return lambda x: x * torch.clamp(x / 6 + 0.5, 0, 1)


@register("Softplus")
def softplus(node: NodeInfo):
    return F.softplus


@register("Softsign")
def softsign(node: NodeInfo):
    return F.softsign


@register("Mish")
def mish(node: NodeInfo):
    return F.mish


@register("PRelu")
def prelu(node: NodeInfo):
    return lambda x, s: torch.where(x < 0, x * s, x)


@register("Gelu")
def gelu(node: NodeInfo):
    approx = node.attrs.get("approximate", "none")
    return lambda x: F.gelu(x, approximate=approx)


@register("LRN")
def lrn(node: NodeInfo):
    size = int(node.attrs["size"])
    a = float(node.attrs.get("alpha", 1e-4))
    b = float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    return lambda x: F.local_response_norm(x, size, a, b, bias)
