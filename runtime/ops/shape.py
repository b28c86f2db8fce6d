"""Shape and data-movement ops (Reshape, Slice, Gather, Pad, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from runtime.ops.nn import torch_pad
from runtime.ops.registry import NodeInfo, register


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


@register("Identity")
def identity(node: NodeInfo):
    return lambda x: x


@register("Constant")
def constant(node: NodeInfo):
    a = node.attrs
    if "value" in a:
        v = a["value"]
    elif "value_float" in a:
        v = torch.tensor(a["value_float"], dtype=torch.float32)
    elif "value_floats" in a:
        v = torch.tensor(list(a["value_floats"]), dtype=torch.float32)
    elif "value_int" in a:
        v = torch.tensor(a["value_int"], dtype=torch.int64)
    elif "value_ints" in a:
        v = torch.tensor(list(a["value_ints"]), dtype=torch.int64)
    else:
        raise node.error("only tensor / float(s) / int(s) values are supported")
    return lambda: v


@register("Reshape")
def reshape(node: NodeInfo):
    allowzero = int(node.attrs.get("allowzero", 0))
    fixed = node.const_list(1)

    def run(x, shape):
        shp = fixed if fixed is not None else _ints(shape)
        if not allowzero:
            shp = [x.shape[i] if s == 0 else s for i, s in enumerate(shp)]
        return x.reshape(shp)

    return run


@register("Flatten")
def flatten(node: NodeInfo):
    axis = int(node.attrs.get("axis", 1))

    def run(x):
        ax = axis + x.dim() if axis < 0 else axis  # axis in [-r, r]; r gives [prod, 1]
        lead, trail = 1, 1
        for s in x.shape[:ax]:
            lead *= s
        for s in x.shape[ax:]:
            trail *= s
        return x.reshape(lead, trail)  # both spelled out: reshape(0, -1) of an empty tensor is ambiguous

    return run


@register("Transpose")
def transpose(node: NodeInfo):
    perm = node.attrs.get("perm")

    def run(x):
        return x.permute(*(perm if perm is not None else range(x.dim() - 1, -1, -1)))

    return run


@register("Concat")
def concat(node: NodeInfo):
    axis = int(node.attrs["axis"])
    return lambda *xs: torch.cat([x for x in xs if x is not None], dim=axis)


@register("Shape")
def shape(node: NodeInfo):
    start = node.attrs.get("start", 0)
    end = node.attrs.get("end", None)
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64, device=x.device)


@register("Size")
def size(node: NodeInfo):
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@register("Gather")
def gather(node: NodeInfo):
    axis = int(node.attrs.get("axis", 0))

    def run(x, idx):
        ax = axis % x.dim()
        idx = torch.where(idx < 0, idx + x.shape[ax], idx).long()
        return x[(slice(None),) * ax + (idx,)]

    return run


@register("GatherElements")
def gather_elements(node: NodeInfo):
    axis = int(node.attrs.get("axis", 0))

    def run(x, idx):
        idx = torch.where(idx < 0, idx + x.shape[axis], idx).long()
        return torch.gather(x, axis, idx)

    return run


@register("Unsqueeze")
def unsqueeze(node: NodeInfo):
    attr = node.attrs.get("axes")

    def run(x, axes=None):
        ax = list(attr) if attr is not None else _ints(axes)
        n = x.dim() + len(ax)
        for a in sorted(a % n for a in ax):
            x = x.unsqueeze(a)
        return x

    return run


@register("Squeeze")
def squeeze(node: NodeInfo):
    attr = node.attrs.get("axes")

    def run(x, axes=None):
        ax = list(attr) if attr is not None else _ints(axes)
        if not ax:
            return x.squeeze()
        keep = [s for i, s in enumerate(x.shape) if i not in {a % x.dim() for a in ax}]
        return x.reshape(keep)

    return run


def _slice(x: torch.Tensor, starts, ends, axes, steps) -> torch.Tensor:
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index: list = [slice(None)] * x.dim()
    flips = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        a = a % x.dim()
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            index[a] = slice(s, max(e, s), st)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            idx = torch.arange(s, e, st, device=x.device)
            flips.append((a, idx))
    out = x[tuple(index)]
    for a, idx in flips:
        out = out.index_select(a, idx)
    return out


@register("Slice")
def slice_(node: NodeInfo):
    if node.opset < 10:
        st, en, ax = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes")
        return lambda x: _slice(x, st, en, ax, None)

    def run(x, starts, ends, axes=None, steps=None):
        return _slice(x, _ints(starts), _ints(ends), _ints(axes), _ints(steps))

    return run


@register("Split")
def split(node: NodeInfo):
    axis = int(node.attrs.get("axis", 0))
    attr = node.attrs.get("split")
    nout = node.n_outputs

    def run(x, sizes=None):
        sz = list(attr) if attr is not None else _ints(sizes)
        if not sz:
            n = x.shape[axis]
            chunk = -(-n // nout)
            sz = [chunk] * (nout - 1) + [n - chunk * (nout - 1)]
        return tuple(torch.split(x, sz, dim=axis))

    return run


@register("Pad")
def pad(node: NodeInfo):
    mode = node.attrs.get("mode", "constant")
    tmode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if tmode is None:
        raise node.error(f"pad mode '{mode}' is not supported")

    def run(x, pads=None, value=None, axes=None):
        if node.opset < 11:
            p, v = list(node.attrs["pads"]), float(node.attrs.get("value", 0.0))
        else:
            p = _ints(pads)
            v = 0.0 if value is None or value.numel() == 0 else value.item()
        if node.opset >= 18 and axes is not None:
            ax = [a % x.dim() for a in _ints(axes)]
            full = [0] * (2 * x.dim())
            for i, a in enumerate(ax):
                full[a], full[a + x.dim()] = p[i], p[i + len(ax)]
            p = full
        tp = torch_pad(p)
        if tmode == "constant":
            return F.pad(x, tp, value=v)
        while len(tp) > 2 and tp[-1] == 0 and tp[-2] == 0:
            tp = tp[:-2]
        if x.dim() - len(tp) // 2 < 1 or len(tp) // 2 > 3:
            raise node.error(f"'{mode}' padding of these dimensions is not supported")
        if x.dim() - len(tp) // 2 == 1:
            return F.pad(x.unsqueeze(0), tp, mode=tmode).squeeze(0)
        return F.pad(x, tp, mode=tmode)

    return run


@register("Expand")
def expand(node: NodeInfo):
    def run(x, shape):
        shp = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
        return x.expand(shp)

    return run


@register("ConstantOfShape")
def constant_of_shape(node: NodeInfo):
    v = node.attrs.get("value")
    if v is None:
        v = torch.zeros(1, dtype=torch.float32)

    def run(shape):
        return torch.full(_ints(shape), v.reshape(-1)[0].item(), dtype=v.dtype, device=shape.device)

    return run


@register("Tile")
def tile(node: NodeInfo):
    return lambda x, reps: x.repeat(*_ints(reps))


@register("Range")
def range_(node: NodeInfo):
    return lambda s, lim, d: torch.arange(s.item(), lim.item(), d.item(), dtype=s.dtype, device=s.device)


@register("DepthToSpace")
def depth_to_space(node: NodeInfo):
    b = int(node.attrs["blocksize"])
    mode = node.attrs.get("mode", "DCR")

    def run(x):
        n, c, h, w = x.shape
        if mode == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (b * b), h * b, w * b)

    return run


@register("SpaceToDepth")
def space_to_depth(node: NodeInfo):
    b = int(node.attrs["blocksize"])

    def run(x):
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)

    return run
