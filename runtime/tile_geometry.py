"""Where a mapped layer sits on the crossbars: its matrix, conv attributes and row / column blocks (one
tile each), read from an analog node of the mapped artifact (runtime.contract)."""

from __future__ import annotations

import math
from typing import Any

import onnx
import torch
import torch.nn.functional as F

from runtime import contract
from runtime.errors import AcompileError
from runtime.ops import NodeInfo
from runtime.ops.nn import torch_pad

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def mapped_inputs(info: NodeInfo, node: onnx.NodeProto
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """W, G_SCALE and B of an analog node (input layout, shapes and types per runtime.contract)."""
    w, gs = info.const(contract.IN_W), info.const(contract.IN_G_SCALE)
    if w is None or gs is None:
        raise AcompileError(f"node '{info.name}' ({node.op_type}): W and G_SCALE must be initializers")
    b = info.const(contract.IN_B) if info.n_inputs > contract.IN_B else None
    contract.check_tensors(node, w, gs, b)
    return w.float(), gs.float(), None if b is None else b.float()


class TileGeometry:
    """Conv / matmul attributes of a crossbar layer, and its row / column blocks (one per tile)."""

    def __init__(self, name: str, rows: int, cols: int, row_blocks: list[tuple[int, int]],
                 col_blocks: list[tuple[int, int]], *, kernel: list[int] | None = None,
                 strides: list[int] | None = None, pads: list[int] | None = None,
                 dilations: list[int] | None = None, alpha: float = 1.0, beta: float = 1.0,
                 output_padding: list[int] | None = None, transposed: bool = False) -> None:
        self.name, self.rows, self.cols = name, int(rows), int(cols)
        self.row_blocks, self.col_blocks = row_blocks or [(0, self.rows)], col_blocks or [(0, self.cols)]
        self.tiles: list[dict] = []
        self.bias_rows = 0  # rows of W holding biases, driven with a constant 1 (contract bias_rows)
        self.replicas = 1  # copies of W on its tile, read together (contract replicas)
        self.const_inputs = 0  # of those, the ones apply() callers append to X themselves (AnalogMatMul)
        self.is_conv = kernel is not None
        # AnalogConvTranspose: W is the equivalent conv's matrix (kernel flipped, in / out swapped);
        # kernel() turns a block of it back into a conv_transpose weight, apply() runs conv_transpose
        self.transposed = bool(transposed)
        self.alpha, self.beta = float(alpha), float(beta)
        if kernel is not None:
            self.k = [int(v) for v in kernel]
            n = len(self.k)
            self.kk = math.prod(self.k)
            if self.rows % self.kk:
                raise AcompileError(f"layer '{name}' (conv): W rows {self.rows} not a multiple of kernel "
                                    f"size {self.kk}")
            self.c_in = self.rows // self.kk
            self.strides = [int(v) for v in (strides or [1] * n)]
            self.dil = [int(v) for v in (dilations or [1] * n)]
            pads = [int(v) for v in (pads or [0] * 2 * n)]
            self.fpad = None if pads[:n] == pads[n:] else torch_pad(pads)
            self.pad = pads[:n] if self.fpad is None else [0] * n
            self.conv = _CONV[n]
            if self.transposed:
                self.out_pad = [int(v) for v in (output_padding or [0] * n)]
                # conv_transpose without padding, then crop pads / add output_padding (any asymmetry)
                self.tcrop = []
                for i in reversed(range(n)):
                    self.tcrop += [-pads[i], self.out_pad[i] - pads[i + n]]

    @classmethod
    def from_node(cls, info: NodeInfo, node: onnx.NodeProto, w: torch.Tensor) -> TileGeometry:
        """The geometry of a mapped analog node, read (and checked) by runtime.contract; its blocks
        from the `tiles` attribute."""
        rows, cols = w.shape
        spec = contract.read_analog_node(node, w_shape=(rows, cols))
        rb, cb = contract.row_blocks(spec.tiles), contract.col_blocks(spec.tiles)
        if spec.is_conv:
            geo = cls(spec.layer, rows, cols, rb, cb, kernel=spec.kernel_shape, strides=spec.strides,
                      pads=spec.pads, dilations=spec.dilations, output_padding=spec.output_padding,
                      transposed=spec.is_transposed)
        else:
            geo = cls(spec.layer, rows, cols, rb, cb, alpha=spec.alpha, beta=spec.beta)
        geo.tiles = [b.to_json() for b in spec.tiles]
        geo.bias_rows = int(spec.attrs.get("bias_rows", 0))
        geo.replicas = spec.replicas
        # an AnalogMatMul with a bias row takes X and drives that row with a constant 1 itself; a recurrent
        # layer builds its rows' inputs per read (runtime/analog_recurrent.py)
        geo.const_inputs = 0 if spec.is_recurrent else geo.bias_rows
        return geo

    @classmethod
    def split(cls, name: str, rows: int, cols: int, tile_rows: int, tile_cols: int,
              **conv: Any) -> TileGeometry:
        """A layer split onto tiles of tile_rows x tile_cols the way the compiler splits it (DESIGN §5)."""
        rb = [(r, min(r + tile_rows, rows)) for r in range(0, rows, tile_rows)]
        cb = [(c, min(c + tile_cols, cols)) for c in range(0, cols, tile_cols)]
        return cls(name, rows, cols, rb, cb, **conv)

    def kernel(self, wm: torch.Tensor) -> torch.Tensor:
        """[rows', cols] matrix in (c, kh, kw) row order -> conv weight [cols, rows'/kk, *k] (a
        transposed layer: the conv_transpose weight [rows'/kk, cols, *k], kernel flipped back)."""
        k = wm.t().reshape(wm.shape[1], wm.shape[0] // self.kk, *self.k)
        if self.transposed:
            k = k.flip(list(range(2, k.dim()))).transpose(0, 1)
        return k

    def block_span(self, rs: int, re: int) -> tuple[int, int, tuple[int, int] | None]:
        """Rows [lo, hi) of the matrix a row block's MVM sees, and the input slice it reads (None:
        the whole input). A conv block reads whole input channels; rows of a channel outside
        [rs, re) belong to the neighbouring block and are zero in this block's kernel."""
        if (rs, re) == (0, self.rows):
            return 0, self.rows, None
        if self.is_conv:
            c0, c1, off = self.block_slice(rs, re)
            return off, c1 * self.kk, (c0, c1)
        return rs, re, (rs, re)

    def block_matrix(self, w: torch.Tensor, rs: int, re: int) -> torch.Tensor:
        """Rows [lo, hi) of w with the rows outside [rs, re) zeroed (differentiable: also used by
        hardware-aware training)."""
        lo, hi, _ = self.block_span(rs, re)
        if (lo, hi) == (rs, re):
            return w[rs:re]
        mask = torch.zeros(hi - lo, 1, device=w.device, dtype=w.dtype)
        mask[rs - lo: re - lo] = 1
        return w[lo:hi] * mask

    def with_constant_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """X with the constant 1 that drives an AnalogMatMul's bias row appended (no-op without one)."""
        if not self.const_inputs:
            return x
        return torch.cat([x, x.new_ones(*x.shape[:-1], self.const_inputs)], -1)

    def block_input(self, x: torch.Tensor, sl: tuple[int, int] | None) -> torch.Tensor:
        """The part of the input a row block reads."""
        if sl is None:
            return x
        return x[:, sl[0]:sl[1]] if self.is_conv else x[..., sl[0]:sl[1]]

    def block_slice(self, rs: int, re: int) -> tuple[int, int, int]:
        """Input-channel range a conv row block touches, and the row offset of that range."""
        c0, c1 = rs // self.kk, -(-re // self.kk)
        return c0, c1, c0 * self.kk

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.is_conv and self.transposed:
            y = _CONV_T[len(self.k)](x, w, None, self.strides, 0, 0, 1, self.dil)
            return F.pad(y, self.tcrop) if any(self.tcrop) else y
        if self.is_conv:
            if self.fpad is not None:
                x = F.pad(x, self.fpad)
            return self.conv(x, w, None, self.strides, self.pad, self.dil)
        return torch.matmul(x, w)
