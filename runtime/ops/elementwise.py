"""Element-wise math, comparisons, casts and reductions."""

from __future__ import annotations

import operator

import torch
from onnx import TensorProto

from runtime.ops.registry import NodeInfo, register

DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.INT16: torch.int16, TensorProto.INT32: torch.int32, TensorProto.INT64: torch.int64,
    TensorProto.BOOL: torch.bool,
}


def _binary(fn):
    return lambda node: fn


for _name, _fn in {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul,
                   "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt,
                   "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
                   "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor}.items():
    register(_name)(_binary(_fn))

for _name, _fn in {"Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg,
                   "Abs": torch.abs, "Reciprocal": torch.reciprocal, "Floor": torch.floor,
                   "Ceil": torch.ceil, "Round": torch.round, "Sign": torch.sign, "Erf": torch.erf,
                   "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Atan": torch.atan,
                   "Not": torch.logical_not, "IsNaN": torch.isnan}.items():
    register(_name)(_binary(_fn))


@register("Div")
def div(node: NodeInfo):
    def run(a, b):
        if not a.is_floating_point() and not b.is_floating_point():
            return torch.div(a, b, rounding_mode="trunc")
        return a / b

    return run


@register("Mod")
def mod(node: NodeInfo):
    fmod = int(node.attrs.get("fmod", 0))
    return torch.fmod if fmod else torch.remainder


@register("Pow")
def pow_(node: NodeInfo):
    def run(a, b):
        return torch.pow(a, b).to(a.dtype)

    return run


def _variadic(fn):
    def conv(node: NodeInfo):
        def run(*xs):
            out = xs[0]
            for x in xs[1:]:
                out = fn(out, x)
            return out

        return run

    return conv


register("Max")(_variadic(torch.maximum))
register("Min")(_variadic(torch.minimum))
register("Sum")(_variadic(operator.add))


@register("Mean")
def mean(node: NodeInfo):
    def run(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out / len(xs)

    return run


@register("Clip")
def clip(node: NodeInfo):
    if node.opset < 11:
        lo = node.attrs.get("min", None)
        hi = node.attrs.get("max", None)
        return lambda x: torch.clamp(x, lo, hi)

    def run(x, lo=None, hi=None):
        if lo is not None:
            x = torch.maximum(x, lo.to(x.dtype))
        if hi is not None:
            x = torch.minimum(x, hi.to(x.dtype))
        return x

    return run


# unsigned types the executor holds as int64 (runtime.executor.to_torch): Cast wraps like onnxruntime
UNSIGNED_MASKS: dict[int, int | None] = {TensorProto.UINT16: 0xFFFF, TensorProto.UINT32: 0xFFFFFFFF,
                                         TensorProto.UINT64: None}


@register("Cast")
def cast(node: NodeInfo):
    to = int(node.attrs["to"])
    if to in UNSIGNED_MASKS:
        mask = UNSIGNED_MASKS[to]
        return lambda x: x.to(torch.int64) if mask is None else x.to(torch.int64) & mask
    if to not in DTYPES:
        raise node.error(f"cast to ONNX type {to} is not supported")
    dt = DTYPES[to]
    return lambda x: x.to(dt)


@register("CastLike")
def cast_like(node: NodeInfo):
    return lambda x, like: x.to(like.dtype)


@register("Where")
def where(node: NodeInfo):
    return torch.where


def _reduce(kind: str):
    def conv(node: NodeInfo):
        keep = bool(node.attrs.get("keepdims", 1))
        noop = bool(node.attrs.get("noop_with_empty_axes", 0))
        attr_axes = node.attrs.get("axes", None)

        def run(x, axes=None):
            ax = list(attr_axes) if attr_axes is not None else (
                None if axes is None else [int(a) for a in axes.reshape(-1).tolist()])
            if not ax:
                if noop:
                    return x
                ax = list(range(x.dim()))
            ax = sorted(a % x.dim() for a in ax)
            if kind == "mean":
                return x.mean(dim=ax, keepdim=keep)
            if kind == "sum":
                return x.sum(dim=ax, keepdim=keep)
            if kind == "max":
                return x.amax(dim=ax, keepdim=keep)
            if kind == "min":
                return x.amin(dim=ax, keepdim=keep)
            if kind == "prod":
                out = x
                for a in reversed(ax):
                    out = out.prod(dim=a, keepdim=keep)
                return out
            if kind == "l2":
                return x.square().sum(dim=ax, keepdim=keep).sqrt()
            if kind == "l1":
                return x.abs().sum(dim=ax, keepdim=keep)
            if kind == "sumsquare":
                return x.square().sum(dim=ax, keepdim=keep)
            raise AssertionError(kind)

        return run

    return conv


for _name, _kind in {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min",
                     "ReduceProd": "prod", "ReduceL2": "l2", "ReduceL1": "l1",
                     "ReduceSumSquare": "sumsquare"}.items():
    register(_name)(_reduce(_kind))


def _arg(fn):
    def conv(node: NodeInfo):
        axis = int(node.attrs.get("axis", 0))
        keep = bool(node.attrs.get("keepdims", 1))
        if int(node.attrs.get("select_last_index", 0)):
            raise node.error("select_last_index=1 is not supported")
        return lambda x: fn(x, dim=axis, keepdim=keep)

    return conv


register("ArgMax")(_arg(torch.argmax))
register("ArgMin")(_arg(torch.argmin))
