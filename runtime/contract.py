"""The mapped-artifact contract (CONTRACTS §3, format 1) as code: the one source of truth.

The compiler writes mapped models with the writer below, the runtime (executor, baseline, analog tiles)
and hwtrain read them with the reader, and `check_mapped` validates a whole mapped model against the
schema. Everything a file on disk carries is named here: the custom domain and its version, the analog
op types with their attribute specs and input layout, the `tiles` block schema, every metadata key.

Light on purpose (stdlib, numpy, onnx; no torch) so that both compiler and runtime import it; of our own
modules it imports only runtime.errors.

Reading is strict: a node that breaks the contract is an AcompileError naming the node and the problem.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime.errors import AcompileError

# --- domain, format, producers ------------------------------------------------------------------------

DOMAIN = "ai.acompile"
DOMAIN_VERSION = 1
FORMAT_VERSION = "1"  # value of metadata key META_FORMAT
PRODUCER = "acompile"  # ModelProto.producer_name of a mapped model
PRODUCER_HWTRAIN = "acompile.hwtrain"  # ... of a model exported by hwtrain

# --- metadata keys (ModelProto.metadata_props) --------------------------------------------------------

META_FORMAT = "acompile.format"  # "1" (FORMAT_VERSION); mapped models only
META_TARGET = "acompile.target"  # JSON of the resolved target (CONTRACTS §4); mapped models only
META_MAPPING = "acompile.mapping"  # JSON of the mapping report (CONTRACTS §5); mapped models only
META_PREPROCESSING = "acompile.preprocessing"  # JSON of runtime.data.Preprocessing
META_RECIPE = "acompile.recipe"  # JSON: how the model was trained / fine-tuned (hwtrain)
META_FINETUNE_TARGET = "acompile.finetune_target"  # JSON of the target a model was fine-tuned for
META_PARENT_SHA256 = "acompile.parent_sha256"  # SHA-256 of the model a fine-tuned one came from
META_SOURCE = "acompile.source"  # JSON: where imported weights come from (scripts/import_resnet32.py)

#: the keys every mapped model has
MAPPED_METADATA = (META_FORMAT, META_TARGET, META_MAPPING)
#: every key of ours; any other key of the input model is kept as it is
METADATA_KEYS = (META_FORMAT, META_TARGET, META_MAPPING, META_PREPROCESSING, META_RECIPE,
                 META_FINETUNE_TARGET, META_PARENT_SHA256, META_SOURCE)
#: keys whose value is JSON (META_FORMAT and META_PARENT_SHA256 are plain strings)
JSON_METADATA = (META_TARGET, META_MAPPING, META_PREPROCESSING, META_RECIPE, META_FINETUNE_TARGET,
                 META_SOURCE)

# --- analog ops: input layout -------------------------------------------------------------------------

ANALOG_CONV = "AnalogConv"
ANALOG_MATMUL = "AnalogMatMul"
ANALOG_CONV_TRANSPOSE = "AnalogConvTranspose"
# one direction of an ONNX LSTM / GRU / RNN: W = [W^T; R^T] ([input_size + hidden_size, gates *
# hidden_size]): x_t and h_{t-1} drive the rows of one array, the gates' columns side by side; biases,
# peepholes, nonlinearities and the cell update are digital (runtime/ops/recurrent.py)
ANALOG_LSTM = "AnalogLSTM"
ANALOG_GRU = "AnalogGRU"
ANALOG_RNN = "AnalogRNN"
RECURRENT_OPS = (ANALOG_LSTM, ANALOG_GRU, ANALOG_RNN)
ANALOG_OPS = (ANALOG_CONV, ANALOG_MATMUL, ANALOG_CONV_TRANSPOSE, *RECURRENT_OPS)
#: the analog ops with a conv geometry (kernel_shape, strides, pads, dilations; W rows = C_in * prod(k))
CONV_OPS = (ANALOG_CONV, ANALOG_CONV_TRANSPOSE)

INPUTS = ("X", "W", "G_SCALE", "B")  # X, W, G_SCALE required; B optional
IN_X, IN_W, IN_G_SCALE, IN_B = 0, 1, 2, 3
MIN_INPUTS, MAX_INPUTS = 3, 4
# a recurrent op continues with the ONNX op's optional inputs
# (B, initial_h, initial_c, P keep the ONNX shapes of one direction: [1, 2 * cols], [1, batch, hidden], ...)
RECURRENT_INPUTS = (*INPUTS, "sequence_lens", "initial_h", "initial_c", "P")
IN_SEQUENCE_LENS, IN_INITIAL_H, IN_INITIAL_C, IN_P = 4, 5, 6, 7
RECURRENT_MAX_INPUTS = {ANALOG_LSTM: 8, ANALOG_GRU: 6, ANALOG_RNN: 6}
RECURRENT_OUTPUTS = {ANALOG_LSTM: ("Y", "Y_h", "Y_c"), ANALOG_GRU: ("Y", "Y_h"), ANALOG_RNN: ("Y", "Y_h")}
#: gates of each recurrent op (cols = gates * hidden_size)
RECURRENT_GATES = {ANALOG_LSTM: 4, ANALOG_GRU: 3, ANALOG_RNN: 1}
ORIG_OPS = {ANALOG_CONV: ("Conv",), ANALOG_MATMUL: ("Gemm", "MatMul"),
            ANALOG_CONV_TRANSPOSE: ("ConvTranspose",), ANALOG_LSTM: ("LSTM",), ANALOG_GRU: ("GRU",),
            ANALOG_RNN: ("RNN",)}


#: Standard ONNX ops (domain ai.onnx) the runtime's executor runs beside the analog ops: what a mapped
#: model may hold for `acompile eval` to run it. runtime/ops registers exactly these (a test checks);
#: the compiler reads this list to tell, at compile time, whether eval can run a model.
EMULATOR_OPS = frozenset((
    "Abs", "Add", "And", "ArgMax", "ArgMin", "Atan", "AveragePool", "BatchNormalization", "Cast", "CastLike",
    "Ceil", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "DepthToSpace",
    "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements",
    "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GRU", "HardSigmoid",
    "HardSwish", "Identity", "InstanceNormalization", "IsNaN", "LRN", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "LSTM", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mish",
    "Mod",
    "Mul", "Neg", "Not", "Or", "PRelu", "Pad", "Pow", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "RNN", "Round", "Selu", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus",
    "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "Tile", "Transpose",
    "Unsqueeze", "Where", "Xor",
))


def w_name(layer: str) -> str:
    """Initializer name of a layer's W."""
    return f"{layer}.W"


def g_scale_name(layer: str) -> str:
    """Initializer name of a layer's G_SCALE."""
    return f"{layer}.G_SCALE"


# --- analog ops: attributes ---------------------------------------------------------------------------

_A = onnx.AttributeProto
REQUIRED = object()  # AttrSpec.default of an attribute every node must carry


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an analog op. `per_axis` 1 / 2: the default is `[default] * n` / `* 2n` for a
    kernel of n spatial dims."""

    name: str
    type: int  # onnx.AttributeProto.AttributeType
    default: Any = REQUIRED
    per_axis: int = 0

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def default_for(self, nsp: int) -> Any:
        return [self.default] * (self.per_axis * nsp) if self.per_axis else self.default


_COMMON = (AttrSpec("layer", _A.STRING),  # the original node name
           AttrSpec("orig_op", _A.STRING),  # ORIG_OPS
           AttrSpec("tiles", _A.STRING),  # JSON list of TileBlock entries
           # optional: the analog node whose array (W, G_SCALE, tiles, programmed devices) this one reads
           # too -- nodes of one constant weight (a per-step MatMul of an unrolled RNN, tied weights)
           AttrSpec("shares", _A.STRING, None))
# copies of W stacked in the free rows of its one tile and driven with the same inputs (target [mapping]
# replicate): their currents add on each column and the periphery, re-ranged by their number, reads
# their mean, so the devices' errors average over the copies (CONTRACTS §3); not for recurrent ops
_REPLICAS = AttrSpec("replicas", _A.INT, 1)
ATTRS: dict[str, dict[str, AttrSpec]] = {
    ANALOG_CONV: {s.name: s for s in (
        AttrSpec("kernel_shape", _A.INTS),
        AttrSpec("strides", _A.INTS, 1, per_axis=1),
        AttrSpec("pads", _A.INTS, 0, per_axis=2),  # explicit begin..end (auto_pad resolved)
        AttrSpec("dilations", _A.INTS, 1, per_axis=1),
        AttrSpec("group", _A.INT, 1),  # always 1 in format 1
        _REPLICAS, *_COMMON)},
    # W holds the kernel flipped and transposed: the crossbar computes a conv over the zero-upsampled
    # input (CONTRACTS §3); output_padding: extra output rows / cols at the end
    ANALOG_CONV_TRANSPOSE: {s.name: s for s in (
        AttrSpec("kernel_shape", _A.INTS),
        AttrSpec("strides", _A.INTS, 1, per_axis=1),
        AttrSpec("pads", _A.INTS, 0, per_axis=2),  # explicit begin..end (auto_pad NOTSET only)
        AttrSpec("dilations", _A.INTS, 1, per_axis=1),
        AttrSpec("output_padding", _A.INTS, 0, per_axis=1),
        AttrSpec("group", _A.INT, 1),  # always 1 in format 1
        _REPLICAS, *_COMMON)},
    ANALOG_MATMUL: {s.name: s for s in (
        AttrSpec("alpha", _A.FLOAT, 1.0),
        AttrSpec("beta", _A.FLOAT, 1.0),
        # 1: W's last row is the bias (beta * C / alpha), driven with a constant 1 appended to X (target
        # [mapping] bias = "row"); then there is no B input
        AttrSpec("bias_rows", _A.INT, 0),
        _REPLICAS, *_COMMON)},
}
OPTIONAL = None  # AttrSpec.default of an attribute that may be absent (no default value)
_RECURRENT = (AttrSpec("hidden_size", _A.INT),
              AttrSpec("input_size", _A.INT),  # W rows = input_size + hidden_size
              AttrSpec("direction", _A.STRING, "forward"),  # forward | reverse (one direction per node)
              AttrSpec("layout", _A.INT, 0),  # ONNX layout: 1 = batch first
              AttrSpec("activations", _A.STRINGS),  # this direction's, resolved
              AttrSpec("activation_alpha", _A.FLOATS, OPTIONAL),  # one per function that takes one
              AttrSpec("activation_beta", _A.FLOATS, OPTIONAL),
              AttrSpec("clip", _A.FLOAT, OPTIONAL),  # absent: no clip
              # bias rows below [W^T; R^T] driven with a constant 1 (target bias = "row"): LSTM / RNN 1
              # (Wb + Rb), GRU 2 (Wb, driven in the x read; Rb, in the h reads); then there is no B input
              AttrSpec("bias_rows", _A.INT, 0))
ATTRS[ANALOG_LSTM] = {s.name: s for s in (*_RECURRENT, AttrSpec("input_forget", _A.INT, 0), *_COMMON)}
ATTRS[ANALOG_GRU] = {s.name: s for s in (*_RECURRENT, AttrSpec("linear_before_reset", _A.INT, 0), *_COMMON)}
ATTRS[ANALOG_RNN] = {s.name: s for s in (*_RECURRENT, *_COMMON)}

# --- the `tiles` attribute ----------------------------------------------------------------------------

TILE_KEYS = ("tile", "chip", "row_start", "row_end", "col_start", "col_end", "tile_row", "tile_col")


@dataclass(frozen=True)
class TileBlock:
    """One entry of the `tiles` JSON: the half-open block [row_start, row_end) x [col_start, col_end) of
    W on physical tile `tile` (chip = tile // tiles_per_chip), at offset (tile_row, tile_col) in it."""

    tile: int
    chip: int
    row_start: int
    row_end: int
    col_start: int
    col_end: int
    tile_row: int = 0
    tile_col: int = 0

    @property
    def height(self) -> int:
        return self.row_end - self.row_start

    @property
    def width(self) -> int:
        return self.col_end - self.col_start

    def to_json(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in TILE_KEYS}

    @classmethod
    def from_json(cls, entry: Any, where: str = "tile block") -> TileBlock:
        if not isinstance(entry, dict):
            raise AcompileError(f"{where}: a tile block must be a JSON object, got {entry!r}")
        keys = set(entry)
        if keys != set(TILE_KEYS):
            missing, extra = sorted(set(TILE_KEYS) - keys), sorted(keys - set(TILE_KEYS))
            raise AcompileError(f"{where}: tile block {entry} has missing keys {missing} / unknown keys "
                                f"{extra}")
        for k in TILE_KEYS:
            v = entry[k]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise AcompileError(f"{where}: tile block key {k!r} must be an integer >= 0, got {v!r}")
        return cls(**{k: entry[k] for k in TILE_KEYS})


def tiles_json(blocks: Iterable[TileBlock | Mapping[str, int]]) -> str:
    """The `tiles` attribute value (compact JSON)."""
    out = [(b if isinstance(b, TileBlock) else TileBlock.from_json(
        {k: int(v) if isinstance(v, np.integer) else v for k, v in b.items()})).to_json() for b in blocks]
    return json.dumps(out, separators=(",", ":"))


def parse_tiles(text: str | bytes, where: str = "tiles") -> list[TileBlock]:
    """The `tiles` attribute -> blocks (each entry checked against the schema)."""
    if isinstance(text, bytes):
        text = text.decode()
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AcompileError(f"{where}: attribute 'tiles' is not valid JSON ({exc.msg})") from None
    if not isinstance(entries, list):
        raise AcompileError(f"{where}: attribute 'tiles' must be a JSON list of tile blocks")
    return [TileBlock.from_json(e, where) for e in entries]


def _overlaps(blocks: list[TileBlock], box) -> tuple[TileBlock, TileBlock] | None:
    """The first pair of blocks whose boxes (box(b) -> (r0, r1, c0, c1)) intersect, or None."""
    order = sorted(blocks, key=lambda b: box(b)[0])
    for i, a in enumerate(order):
        ar0, ar1, ac0, ac1 = box(a)
        for b in order[i + 1:]:
            br0, _br1, bc0, bc1 = box(b)
            if br0 >= ar1:
                break
            if bc0 < ac1 and ac0 < bc1:
                return a, b
    return None


def check_blocks(blocks: list[TileBlock], rows: int, cols: int, where: str, *,
                 tile: tuple[int, int] | None = None, tiles_per_chip: int | None = None,
                 replicas: int = 1) -> None:
    """Invariants of one matrix's blocks: inside W, non-empty, no two overlapping, together covering W
    (so every weight sits on exactly one tile). With the target's tile size (R, C): each block fits its
    tile at its offset (its `replicas` copies stacked: height x replicas rows) and there are
    ceil(rows/R) x ceil(cols/C) of them; with tiles_per_chip: chip = tile // tiles_per_chip. Replicas
    need W in one row block (the copies share its tile's rows)."""
    if not blocks:
        raise AcompileError(f"{where}: attribute 'tiles' has no blocks; W [{rows}, {cols}] must be covered")
    for b in blocks:
        if not (0 <= b.row_start < b.row_end <= rows and 0 <= b.col_start < b.col_end <= cols):
            raise AcompileError(f"{where}: tile block rows [{b.row_start}, {b.row_end}) x cols "
                                f"[{b.col_start}, {b.col_end}) is empty or outside W [{rows}, {cols}]")
        if tile is not None:
            R, C = tile
            if b.tile_row + b.height * replicas > R or b.tile_col + b.width > C:
                what = f"{b.height}x{b.width}" + (f" ({replicas} replicas)" if replicas > 1 else "")
                raise AcompileError(f"{where}: tile block {what} at ({b.tile_row}, {b.tile_col}) does not "
                                    f"fit a {R}x{C} tile")
        if tiles_per_chip is not None and b.chip != b.tile // tiles_per_chip:
            raise AcompileError(f"{where}: tile block on tile {b.tile} says chip {b.chip}, expected "
                                f"{b.tile // tiles_per_chip} ({tiles_per_chip} tiles per chip)")
    pair = _overlaps(blocks, lambda b: (b.row_start, b.row_end, b.col_start, b.col_end))
    if pair is not None:
        a, b = pair
        raise AcompileError(f"{where}: tile blocks overlap: rows [{a.row_start}, {a.row_end}) x cols "
                            f"[{a.col_start}, {a.col_end}) and rows [{b.row_start}, {b.row_end}) x cols "
                            f"[{b.col_start}, {b.col_end})")
    if replicas > 1 and len(row_blocks(blocks)) > 1:
        raise AcompileError(f"{where}: {replicas} replicas need W in one row block, got "
                            f"{len(row_blocks(blocks))}")
    covered = sum(b.height * b.width for b in blocks)
    if covered != rows * cols:
        raise AcompileError(f"{where}: tile blocks cover {covered} of the {rows * cols} weights of W "
                            f"[{rows}, {cols}]")
    if tile is not None:
        want = math.ceil(rows / tile[0]) * math.ceil(cols / tile[1])
        if len(blocks) != want:
            raise AcompileError(f"{where}: {len(blocks)} tile blocks, expected ceil({rows}/{tile[0]}) x "
                                f"ceil({cols}/{tile[1]}) = {want}")


def row_blocks(blocks: Iterable[TileBlock]) -> list[tuple[int, int]]:
    """Distinct [row_start, row_end) of the blocks, sorted (one ADC partial sum each)."""
    return sorted({(b.row_start, b.row_end) for b in blocks})


def col_blocks(blocks: Iterable[TileBlock]) -> list[tuple[int, int]]:
    return sorted({(b.col_start, b.col_end) for b in blocks})


# --- writer -------------------------------------------------------------------------------------------


def node_label(node: onnx.NodeProto) -> str:
    """How errors name a node: `node 'conv3' (AnalogConv)`."""
    return f"node {node.name or (node.output[0] if node.output else '')!r} ({node.op_type})"


def conv_attrs(kernel_shape: list[int], strides: list[int] | None = None, pads: list[int] | None = None,
               dilations: list[int] | None = None, orig_op: str = "Conv") -> dict[str, Any]:
    """AnalogConv attributes (besides layer and tiles), defaults filled in."""
    n = len(kernel_shape)
    return {"kernel_shape": [int(v) for v in kernel_shape],
            "strides": [int(v) for v in (strides if strides is not None else [1] * n)],
            "pads": [int(v) for v in (pads if pads is not None else [0] * 2 * n)],
            "dilations": [int(v) for v in (dilations if dilations is not None else [1] * n)],
            "group": 1, "orig_op": orig_op}


def conv_transpose_attrs(kernel_shape: list[int], strides: list[int] | None = None,
                         pads: list[int] | None = None, dilations: list[int] | None = None,
                         output_padding: list[int] | None = None) -> dict[str, Any]:
    """AnalogConvTranspose attributes (besides layer and tiles), defaults filled in."""
    n = len(kernel_shape)
    out = conv_attrs(kernel_shape, strides, pads, dilations, orig_op="ConvTranspose")
    out["output_padding"] = [int(v) for v in (output_padding if output_padding is not None else [0] * n)]
    return out


def conv_transpose_kernel(w: np.ndarray) -> np.ndarray:
    """ConvTranspose weight [C_in, C_out, *k] -> the AnalogConvTranspose W [C_in * prod(k), C_out]:
    the equivalent conv's weight (kernel flipped in space, in / out swapped) as a crossbar matrix, rows
    ordered (c_in, k...). Exact: a permutation of the original values."""
    nsp = w.ndim - 2
    conv = np.flip(w, axis=tuple(range(2, 2 + nsp))).swapaxes(0, 1)  # [C_out, C_in, *k]
    return np.ascontiguousarray(conv.reshape(conv.shape[0], -1).T)


def matmul_attrs(alpha: float = 1.0, beta: float = 1.0, orig_op: str = "MatMul", bias_rows: int = 0
                 ) -> dict[str, Any]:
    """AnalogMatMul attributes (besides layer and tiles)."""
    out: dict[str, Any] = {"alpha": float(alpha), "beta": float(beta), "orig_op": orig_op}
    if bias_rows:
        out["bias_rows"] = int(bias_rows)
    return out


def recurrent_attrs(op_type: str, hidden_size: int, input_size: int, direction: str, activations: list[str],
                    *, layout: int = 0, activation_alpha: list[float] | None = None,
                    activation_beta: list[float] | None = None, clip: float | None = None,
                    input_forget: int = 0, linear_before_reset: int = 0, orig_op: str = "",
                    bias_rows: int = 0) -> dict[str, Any]:
    """AnalogLSTM / AnalogGRU / AnalogRNN attributes (besides layer and tiles)."""
    out: dict[str, Any] = {"hidden_size": int(hidden_size), "input_size": int(input_size),
                           "direction": direction, "layout": int(layout),
                           "activations": [str(a) for a in activations],
                           "orig_op": orig_op or ORIG_OPS[op_type][0]}
    if activation_alpha:
        out["activation_alpha"] = [float(v) for v in activation_alpha]
    if activation_beta:
        out["activation_beta"] = [float(v) for v in activation_beta]
    if clip is not None:
        out["clip"] = float(clip)
    if op_type == ANALOG_LSTM:
        out["input_forget"] = int(input_forget)
    if op_type == ANALOG_GRU:
        out["linear_before_reset"] = int(linear_before_reset)
    if bias_rows:
        out["bias_rows"] = int(bias_rows)
    return out


def _coerce(spec: AttrSpec, value: Any) -> Any:
    if spec.type == _A.INTS:
        return [int(v) for v in value]
    if spec.type == _A.FLOATS:
        return [float(v) for v in value]
    if spec.type == _A.STRINGS:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
    if spec.type == _A.INT:
        return int(value)
    if spec.type == _A.FLOAT:
        return float(value)
    return value.decode() if isinstance(value, bytes) else str(value)


def make_analog_node(op_type: str, name: str, x: str, W: np.ndarray, g_scale: np.ndarray,
                     outputs: list[str], attrs: Mapping[str, Any],
                     tiles: Iterable[TileBlock | Mapping[str, int]], *, bias: str | None = None,
                     layer: str | None = None, extra_inputs: list[str] | None = None,
                     shares: str | None = None) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """An analog node and its two initializers (W as `{name}.W`, G_SCALE as `{name}.G_SCALE`, float32).

    `attrs`: the op's attributes except `layer` (default: `name`) and `tiles` (conv_attrs /
    matmul_attrs, recurrent_attrs build them); each is written with the type its AttrSpec says.
    `extra_inputs`: a recurrent op's sequence_lens, initial_h, initial_c, P ("" for absent). `shares`: the
    node whose array this one reads too (its W and G_SCALE are used; no initializers of its own are made,
    and `W` / `g_scale` must equal the owner's). The result is checked with check_analog_node, so the
    writer cannot produce what the reader refuses."""
    if op_type not in ATTRS:
        raise AcompileError(f"node {name!r} ({op_type}): not an analog op (one of {list(ANALOG_OPS)})")
    spec = ATTRS[op_type]
    values = {**attrs, "layer": layer if layer is not None else name, "tiles": tiles_json(tiles)}
    if shares:
        values["shares"] = shares
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise AcompileError(f"node {name!r} ({op_type}): unknown attribute(s) {unknown}")
    W = np.ascontiguousarray(np.asarray(W, dtype=np.float32))
    g = np.ascontiguousarray(np.asarray(g_scale, dtype=np.float32).reshape(-1))
    owner = shares or name
    inits = [numpy_helper.from_array(W, w_name(owner)), numpy_helper.from_array(g, g_scale_name(owner))]
    ins = [x, w_name(owner), g_scale_name(owner), bias or "", *(extra_inputs or [])]
    while len(ins) > MIN_INPUTS and not ins[-1]:
        ins.pop()
    node = helper.make_node(op_type, ins, list(outputs), name=name, domain=DOMAIN)
    for k in spec:  # the spec's order
        if k in values:
            node.attribute.append(helper.make_attribute(k, _coerce(spec[k], values[k]),
                                                        attr_type=spec[k].type))
    check_analog_node(node, {t.name: t for t in inits})
    return node, ([] if shares else inits)


def add_domain(model: onnx.ModelProto) -> None:
    """Import the analog domain (once)."""
    if not any(op.domain == DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))


def set_metadata(model: onnx.ModelProto, meta: Mapping[str, str]) -> None:
    """Replace the model's metadata_props by `meta` (in its order)."""
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def mapped_metadata(target: Mapping[str, Any], mapping: Mapping[str, Any],
                    keep: Mapping[str, str] | None = None) -> dict[str, str]:
    """Metadata of a mapped model: every entry of `keep` (the input model's), plus format, target and
    mapping."""
    meta = dict(keep or {})
    meta[META_FORMAT] = FORMAT_VERSION
    meta[META_TARGET] = json.dumps(target, separators=(",", ":"))
    meta[META_MAPPING] = json.dumps(mapping, separators=(",", ":"))
    return meta


# --- reader -------------------------------------------------------------------------------------------


@dataclass
class AnalogNode:
    """One analog node, read. W / g_scale / bias are None where the tensor is not an initializer (or
    no initializers were given); w_shape is known either way when the caller passed it."""

    name: str
    op_type: str
    layer: str
    orig_op: str
    x: str
    outputs: list[str]
    w_name: str
    g_scale_name: str
    bias_name: str | None
    tiles: list[TileBlock]
    w_shape: tuple[int, int] | None = None
    W: np.ndarray | None = None
    g_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    kernel_shape: list[int] | None = None
    strides: list[int] | None = None
    pads: list[int] | None = None
    dilations: list[int] | None = None
    group: int = 1
    alpha: float = 1.0
    beta: float = 1.0
    attrs: dict[str, Any] = field(default_factory=dict)  # every attribute, decoded, defaults filled in

    output_padding: list[int] | None = None
    inputs: list[str] = field(default_factory=list)  # every input name (a recurrent op's states, ...)

    @property
    def is_recurrent(self) -> bool:
        """One direction of an LSTM / GRU / RNN (AnalogLSTM, AnalogGRU, AnalogRNN)."""
        return self.op_type in RECURRENT_OPS

    @property
    def is_conv(self) -> bool:
        """A conv geometry (AnalogConv or AnalogConvTranspose)."""
        return self.op_type in CONV_OPS

    @property
    def is_transposed(self) -> bool:
        return self.op_type == ANALOG_CONV_TRANSPOSE

    @property
    def replicas(self) -> int:
        """Copies of W on its tile (1 for recurrent ops, which have no such attribute)."""
        return int(self.attrs.get("replicas", 1))

    @property
    def rows(self) -> int:
        assert self.w_shape is not None
        return self.w_shape[0]

    @property
    def cols(self) -> int:
        assert self.w_shape is not None
        return self.w_shape[1]

    def conv_weight(self) -> np.ndarray:
        """The ONNX Conv weight [C_out, C_in, *k] = W.T.reshape(...) (AnalogConv only)."""
        assert self.W is not None and self.kernel_shape is not None
        k = self.kernel_shape
        return np.ascontiguousarray(self.W.T.reshape(self.cols, self.rows // math.prod(k), *k))

    def conv_transpose_weight(self) -> np.ndarray:
        """The ONNX ConvTranspose weight [C_in, C_out, *k] (AnalogConvTranspose only): conv_weight()
        with in / out swapped and the kernel flipped back."""
        w = self.conv_weight()
        return np.ascontiguousarray(np.flip(w, axis=tuple(range(2, w.ndim))).swapaxes(0, 1))


def is_analog(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN


def _decode(a: onnx.AttributeProto) -> Any:
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        if a.type == _A.INTS:
            return [int(x) for x in v]
        if a.type == _A.STRINGS:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in v]
        if a.type == _A.FLOATS:
            return [float(x) for x in v]
        return v
    return v


def read_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """The analog node's attributes checked against ATTRS (names, types, values), decoded, with the
    defaults filled in."""
    w = node_label(node)
    if node.domain != DOMAIN or node.op_type not in ATTRS:
        raise AcompileError(f"{w}: not an analog op ({DOMAIN}::{node.op_type}; expected one of "
                            f"{list(ANALOG_OPS)})")
    spec = ATTRS[node.op_type]
    got: dict[str, Any] = {}
    for a in node.attribute:
        s = spec.get(a.name)
        if s is None:
            raise AcompileError(f"{w}: unknown attribute {a.name!r} (an {node.op_type} has {list(spec)})")
        if a.type != s.type:
            raise AcompileError(f"{w}: attribute {a.name!r} must be {_A.AttributeType.Name(s.type)}, got "
                                f"{_A.AttributeType.Name(a.type)}")
        got[a.name] = _decode(a)
    missing = [k for k, s in spec.items() if s.required and k not in got]
    if missing:
        raise AcompileError(f"{w}: missing attribute(s) {missing}")
    if got["orig_op"] not in ORIG_OPS[node.op_type]:
        raise AcompileError(f"{w}: attribute 'orig_op' must be one of {list(ORIG_OPS[node.op_type])}, got "
                            f"{got['orig_op']!r}")
    if not got["layer"]:
        raise AcompileError(f"{w}: attribute 'layer' is empty")
    if "replicas" in spec:
        got.setdefault("replicas", 1)
        if got["replicas"] < 1:
            raise AcompileError(f"{w}: attribute 'replicas' must be >= 1, got {got['replicas']}")
    if node.op_type in CONV_OPS:
        k = got["kernel_shape"]
        n = len(k)
        if n < 1 or any(v <= 0 for v in k):
            raise AcompileError(f"{w}: attribute 'kernel_shape' must be positive integers, got {k}")
        names = [nm for nm in ("strides", "pads", "dilations", "output_padding", "group") if nm in spec]
        for name in names:
            got.setdefault(name, spec[name].default_for(n))
        checks = [("strides", n, 1), ("dilations", n, 1), ("pads", 2 * n, 0)]
        if node.op_type == ANALOG_CONV_TRANSPOSE:
            checks.append(("output_padding", n, 0))
        for name, size, low in checks:
            v = got[name]
            if len(v) != size or any(x < low for x in v):
                raise AcompileError(f"{w}: attribute {name!r} must be {size} integers >= {low}, got {v}")
        if node.op_type == ANALOG_CONV_TRANSPOSE:
            bad = [i for i in range(n) if got["output_padding"][i] >= max(got["strides"][i],
                                                                         got["dilations"][i])]
            if bad:
                raise AcompileError(f"{w}: output_padding {got['output_padding']} must be smaller than the "
                                    f"stride or the dilation on each axis")
        if got["group"] != 1:
            raise AcompileError(f"{w}: group must be 1 (format {FORMAT_VERSION}), got {got['group']}")
    elif node.op_type in RECURRENT_OPS:
        _check_recurrent_attrs(node, got, spec)
    else:
        for name in ("alpha", "beta", "bias_rows"):
            got.setdefault(name, spec[name].default)
            if not math.isfinite(got[name]):
                raise AcompileError(f"{w}: attribute {name!r} must be finite, got {got[name]}")
        if got["bias_rows"] not in (0, 1):
            raise AcompileError(f"{w}: attribute 'bias_rows' must be 0 or 1, got {got['bias_rows']}")
    return got


#: bias rows a recurrent op may have (target bias = "row")
RECURRENT_BIAS_ROWS = {ANALOG_LSTM: (0, 1), ANALOG_GRU: (0, 2), ANALOG_RNN: (0, 1)}


#: activation functions of ONNX recurrent ops (lower case); the ONNX defaults of each cell's functions
#: and of the alpha / beta of those that take one (the defaults of the ONNX ops of the same name)
RECURRENT_ACTIVATIONS = ("relu", "tanh", "sigmoid", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh",
                         "hardsigmoid", "elu", "softsign", "softplus")
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATION_ALPHA = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0,
                    "hardsigmoid": 0.2, "elu": 1.0}
ACTIVATION_BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}
_TAKES_ALPHA, _TAKES_BETA = tuple(ACTIVATION_ALPHA), tuple(ACTIVATION_BETA)
_N_ACTIVATIONS = {ANALOG_LSTM: 3, ANALOG_GRU: 2, ANALOG_RNN: 1}


def resolve_activations(op: str, names: list[str] | None, alphas: list[float] | None,
                        betas: list[float] | None, directions: int
                        ) -> list[tuple[list[str], list[float], list[float]]]:
    """Per direction of an ONNX LSTM / GRU / RNN: (its activation functions, the alpha of each that takes
    one, the beta of each that takes one), the ONNX defaults filled in. activation_alpha / _beta are
    consumed in order by the functions that take them (onnxruntime's reading). ValueError on a wrong
    count or an unknown function."""
    k = len(DEFAULT_ACTIVATIONS[op])
    names = list(names) if names else list(DEFAULT_ACTIVATIONS[op]) * directions
    if len(names) != k * directions:
        raise ValueError(f"{op} needs {k * directions} activations ({k} per direction), got {len(names)}")
    bad = [n for n in names if n.lower() not in RECURRENT_ACTIVATIONS]
    if bad:
        raise ValueError(f"unknown activation {bad[0]!r}")
    a_it, b_it = iter(alphas or []), iter(betas or [])
    out = []
    for d in range(directions):
        acts = names[d * k:(d + 1) * k]
        al = [float(next(a_it, ACTIVATION_ALPHA[n.lower()])) for n in acts if n.lower() in ACTIVATION_ALPHA]
        be = [float(next(b_it, ACTIVATION_BETA[n.lower()])) for n in acts if n.lower() in ACTIVATION_BETA]
        out.append((acts, al, be))
    return out


def _check_recurrent_attrs(node: onnx.NodeProto, got: dict[str, Any], spec: dict[str, AttrSpec]) -> None:
    w = node_label(node)
    for name, s in spec.items():
        if s.default is not REQUIRED and s.default is not OPTIONAL:
            got.setdefault(name, s.default)
    for name in ("hidden_size", "input_size"):
        if got[name] <= 0:
            raise AcompileError(f"{w}: attribute {name!r} must be > 0, got {got[name]}")
    if got["direction"] not in ("forward", "reverse"):
        raise AcompileError(f"{w}: attribute 'direction' must be forward or reverse (one direction per "
                            f"analog node), got {got['direction']!r}")
    if got["layout"] not in (0, 1):
        raise AcompileError(f"{w}: attribute 'layout' must be 0 or 1, got {got['layout']}")
    acts = [a.lower() for a in got["activations"]]
    if len(acts) != _N_ACTIVATIONS[node.op_type] or any(a not in RECURRENT_ACTIVATIONS for a in acts):
        raise AcompileError(f"{w}: attribute 'activations' must be {_N_ACTIVATIONS[node.op_type]} of "
                            f"{list(RECURRENT_ACTIVATIONS)} (any case), got {got['activations']}")
    for name, takes in (("activation_alpha", _TAKES_ALPHA), ("activation_beta", _TAKES_BETA)):
        n = sum(a in takes for a in acts)
        v = got.get(name)
        if v is not None and (len(v) != n or not all(math.isfinite(x) for x in v)):
            raise AcompileError(f"{w}: attribute {name!r} must hold one finite value per activation that "
                                f"takes one ({n}), got {v}")
    clip = got.get("clip")
    if clip is not None and not (math.isfinite(clip) and clip > 0):
        raise AcompileError(f"{w}: attribute 'clip' must be > 0 when present, got {clip}")
    for name in ("input_forget", "linear_before_reset"):
        if name in got and got[name] not in (0, 1):
            raise AcompileError(f"{w}: attribute {name!r} must be 0 or 1, got {got[name]}")
    if got["bias_rows"] not in RECURRENT_BIAS_ROWS[node.op_type]:
        raise AcompileError(f"{w}: attribute 'bias_rows' must be one of {RECURRENT_BIAS_ROWS[node.op_type]}, "
                            f"got {got['bias_rows']}")


def _tensor_info(t: onnx.TensorProto | np.ndarray) -> tuple[tuple[int, ...], str]:
    if isinstance(t, onnx.TensorProto):
        try:
            dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)))
        except Exception:  # noqa: BLE001 - an undefined / unknown element type
            dtype = onnx.TensorProto.DataType.Name(t.data_type).lower() if t.data_type else "undefined"
        return tuple(int(d) for d in t.dims), dtype
    a = np.asarray(t)
    return tuple(a.shape), str(a.dtype)


def _array(t: onnx.TensorProto | np.ndarray) -> np.ndarray:
    return numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else np.asarray(t)


def check_tensors(node: onnx.NodeProto, w: Any, g: Any = None, b: Any = None, *,
                  conv_rows_per_kernel: int | None = None) -> None:
    """Shapes / types of W, G_SCALE and B (each a TensorProto, a numpy array or anything with `.shape`
    and `.dtype`; None: not known here): W float32 [rows, cols]; G_SCALE float32 [cols], > 0 and finite;
    an AnalogConv's B [cols], an AnalogMatMul's B broadcastable to [..., cols]."""
    wh = node_label(node)

    def info(t: Any) -> tuple[tuple[int, ...], str]:
        if isinstance(t, (onnx.TensorProto, np.ndarray)):
            return _tensor_info(t)
        return tuple(int(d) for d in t.shape), str(t.dtype).replace("torch.", "")

    shape, dtype = info(w)
    if len(shape) != 2 or dtype != "float32":
        raise AcompileError(f"{wh}: W must be a float32 matrix [rows, cols], got {dtype} {list(shape)}")
    rows, cols = shape
    if conv_rows_per_kernel and rows % conv_rows_per_kernel:
        raise AcompileError(f"{wh}: W has {rows} rows, not a multiple of the kernel size "
                            f"{conv_rows_per_kernel} (rows = C_in * prod(kernel_shape))")
    if g is not None:
        gshape, gtype = info(g)
        if gshape != (cols,) or gtype != "float32":
            raise AcompileError(f"{wh}: G_SCALE must be float32 [{cols}] (one per column of W), got {gtype} "
                                f"{list(gshape)}")
        if isinstance(g, (onnx.TensorProto, np.ndarray)):
            gv = _array(g)
            if not (np.isfinite(gv).all() and (gv > 0).all()):
                raise AcompileError(f"{wh}: G_SCALE must be finite and > 0 (uS per weight unit)")
    if b is not None:
        bshape, btype = info(b)
        conv = node.op_type in CONV_OPS
        if node.op_type in RECURRENT_OPS:  # the ONNX op's B of one direction: [1, Wb; Rb]
            ok, want = bshape == (1, 2 * cols), f"[1, {2 * cols}] (Wb and Rb)"
        else:
            ok = bshape == (cols,) if conv else (not bshape or bshape[-1] in (1, cols))
            want = f"[{cols}]" if conv else f"[..., {cols}]"
        if not ok or btype != "float32":
            raise AcompileError(f"{wh}: B must be float32 {want}, got {btype} {list(bshape)}")


def read_analog_node(node: onnx.NodeProto,
                     initializers: Mapping[str, onnx.TensorProto | np.ndarray] | None = None, *,
                     w_shape: tuple[int, int] | None = None, load: bool = True) -> AnalogNode:
    """Parse (and check) one analog node. `initializers` (name -> TensorProto or array) give W, G_SCALE
    and B (and W's shape); without them pass `w_shape` for the tile-block checks. `load=False` checks
    the tensors' shapes and types without converting them to arrays (W, g_scale, bias stay None)."""
    wh = node_label(node)
    attrs = read_attrs(node)
    recurrent = node.op_type in RECURRENT_OPS
    if recurrent:
        most = RECURRENT_MAX_INPUTS[node.op_type]
        if not MIN_INPUTS <= len(node.input) <= most:
            raise AcompileError(f"{wh}: has {len(node.input)} inputs, expected "
                                f"({', '.join(RECURRENT_INPUTS[:most])}; from B on optional)")
        outs = RECURRENT_OUTPUTS[node.op_type]
        if not node.input[IN_X] or not 1 <= len(node.output) <= len(outs) or not any(node.output):
            raise AcompileError(f"{wh}: needs an input X and outputs ({', '.join(outs)}), at least one")
    else:
        if not MIN_INPUTS <= len(node.input) <= MAX_INPUTS:
            raise AcompileError(f"{wh}: has {len(node.input)} inputs, expected (X, W, G_SCALE[, B])")
        if not node.input[IN_X] or len(node.output) != 1 or not node.output[0]:
            raise AcompileError(f"{wh}: needs an input X and exactly one output Y")
    inits = initializers or {}
    bias_name = node.input[IN_B] if len(node.input) > IN_B and node.input[IN_B] else None
    if bias_name and attrs.get("bias_rows"):
        raise AcompileError(f"{wh}: has bias rows in W (bias_rows={attrs['bias_rows']}) and a B input too")
    tw, tg = inits.get(node.input[IN_W]), inits.get(node.input[IN_G_SCALE])
    tb = inits.get(bias_name) if bias_name else None
    if initializers is not None and (tw is None or tg is None):
        raise AcompileError(f"{wh}: W and G_SCALE must be initializers")
    kk = math.prod(attrs["kernel_shape"]) if node.op_type in CONV_OPS else None
    if tw is not None:
        check_tensors(node, tw, tg, tb, conv_rows_per_kernel=kk)
        w_shape = _tensor_info(tw)[0]  # type: ignore[assignment]
    tiles = parse_tiles(attrs["tiles"], wh)
    if w_shape is not None:
        w_shape = (int(w_shape[0]), int(w_shape[1]))
        if recurrent:
            h, i = attrs["hidden_size"], attrs["input_size"]
            want = (i + h + attrs["bias_rows"], RECURRENT_GATES[node.op_type] * h)
            if w_shape != want:
                raise AcompileError(f"{wh}: W must be [input_size + hidden_size + bias_rows, gates * "
                                    f"hidden_size] = {list(want)}, got {list(w_shape)}")
        check_blocks(tiles, *w_shape, wh, replicas=int(attrs.get("replicas", 1)))
    out = AnalogNode(name=node.name or node.output[0], op_type=node.op_type, layer=attrs["layer"],
                     orig_op=attrs["orig_op"], x=node.input[IN_X], outputs=list(node.output),
                     w_name=node.input[IN_W], g_scale_name=node.input[IN_G_SCALE], bias_name=bias_name,
                     tiles=tiles, w_shape=w_shape, attrs=attrs)
    if load:
        out.W = None if tw is None else _array(tw)
        out.g_scale = None if tg is None else _array(tg)
        out.bias = None if tb is None else _array(tb)
    if node.op_type in CONV_OPS:
        out.kernel_shape, out.strides = attrs["kernel_shape"], attrs["strides"]
        out.pads, out.dilations, out.group = attrs["pads"], attrs["dilations"], attrs["group"]
        out.output_padding = attrs.get("output_padding")
    elif not recurrent:
        out.alpha, out.beta = float(attrs["alpha"]), float(attrs["beta"])
    out.inputs = list(node.input)
    return out


def check_analog_node(node: onnx.NodeProto, initializers: Mapping[str, onnx.TensorProto | np.ndarray]
                      ) -> AnalogNode:
    """read_analog_node without loading the tensors (every check, no copies)."""
    return read_analog_node(node, initializers, load=False)


def analog_nodes(model: onnx.ModelProto, *, load: bool = True) -> list[AnalogNode]:
    """Every analog node of the model (graph order), read."""
    inits = {t.name: t for t in model.graph.initializer}
    return [read_analog_node(n, inits, load=load) for n in model.graph.node if n.domain == DOMAIN]


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def _json_meta(meta: Mapping[str, str], key: str, what: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise AcompileError(f"{what}: {key} metadata is not valid JSON") from None


@dataclass
class MappedMetadata:
    target: dict[str, Any]
    mapping: dict[str, Any]
    entries: dict[str, str]  # every metadata entry, ours and the input model's


def read_mapped_metadata(model: onnx.ModelProto | Mapping[str, str], what: str = "model") -> MappedMetadata:
    """Target and mapping report of a mapped model (`what` names it in errors)."""
    meta = read_metadata(model) if isinstance(model, onnx.ModelProto) else dict(model)
    if meta.get(META_FORMAT) != FORMAT_VERSION or META_MAPPING not in meta or META_TARGET not in meta:
        raise AcompileError(f"{what}: not a model mapped by acompile (no {META_FORMAT}={FORMAT_VERSION} / "
                            f"{META_TARGET} / {META_MAPPING} metadata); compile it first")
    target, mapping = _json_meta(meta, META_TARGET, what), _json_meta(meta, META_MAPPING, what)
    for key, v in ((META_TARGET, target), (META_MAPPING, mapping)):
        if not isinstance(v, dict):
            raise AcompileError(f"{what}: {key} metadata must be a JSON object")
    return MappedMetadata(target, mapping, meta)


def read_target(model: onnx.ModelProto) -> dict[str, Any]:
    """The resolved target stored in a mapped model."""
    meta = read_metadata(model)
    if META_TARGET not in meta:
        raise AcompileError(f"the model has no {META_TARGET} metadata: compile it first "
                            "(acompile MODEL.onnx --target pcm)")
    target = _json_meta(meta, META_TARGET, "model")
    if not isinstance(target, dict):
        raise AcompileError(f"model: {META_TARGET} metadata must be a JSON object")
    return target


# --- the whole model ----------------------------------------------------------------------------------


def check_mapped(model: onnx.ModelProto, what: str = "model") -> list[AnalogNode]:
    """Validate a mapped model against the contract; returns its analog nodes (tensors not loaded).
    `what` names the model in errors (e.g. its file name).

    Metadata (format, target, mapping as JSON objects; every other key of ours valid JSON where it is
    JSON), the domain import, every analog node (attributes, inputs, tensor shapes / types, tile blocks
    against W and the target's tile size / tiles per chip), no two blocks overlapping on one physical
    tile, no node of our domain that is not an analog op. Does not run onnx.checker."""
    meta = read_mapped_metadata(model, what)
    for key in JSON_METADATA:
        if key in meta.entries:
            _json_meta(meta.entries, key, what)
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get(DOMAIN) != DOMAIN_VERSION:
        raise AcompileError(f"{what}: opset import {DOMAIN} version {DOMAIN_VERSION} missing "
                            f"(got {versions.get(DOMAIN)})")
    tile_cfg = meta.target.get("tile", {}) if isinstance(meta.target.get("tile"), dict) else {}
    R, C, tpc = tile_cfg.get("rows"), tile_cfg.get("cols"), tile_cfg.get("tiles_per_chip")
    tile = (R, C) if isinstance(R, int) and isinstance(C, int) else None
    tpc = tpc if isinstance(tpc, int) and tpc > 0 else None
    inits = {t.name: t for t in model.graph.initializer}
    nodes: list[AnalogNode] = []
    for n in model.graph.node:
        if n.domain != DOMAIN:
            continue
        a = read_analog_node(n, inits, load=False)
        check_blocks(a.tiles, a.rows, a.cols, node_label(n), tile=tile, tiles_per_chip=tpc,
                     replicas=a.replicas)
        nodes.append(a)
    # a node that reads another's array has that node's W, G_SCALE and tiles
    by_name = {a.name: a for a in nodes}
    for a in nodes:
        owner = a.attrs.get("shares")
        if owner is None:
            continue
        o = by_name.get(owner)
        if o is None or o.attrs.get("shares") is not None:
            raise AcompileError(f"{what}: node {a.name!r} shares the array of {owner!r}, which is not an "
                                "analog node holding its own array")
        if (a.w_name, a.g_scale_name, a.tiles, a.replicas) != (o.w_name, o.g_scale_name, o.tiles,
                                                                o.replicas):
            raise AcompileError(f"node {a.name!r}: shares the array of {owner!r} but its W, G_SCALE, tiles "
                                "or replicas differ from it")
    # blocks that share a physical tile (--pack) sit side by side in it
    by_tile: dict[int, list[tuple[str, TileBlock]]] = {}
    height: dict[int, int] = {}  # rows a block takes on its tile: its height x its node's replicas
    for a in nodes:
        if a.attrs.get("shares") is not None:
            continue  # its blocks are its owner's
        for b in a.tiles:
            by_tile.setdefault(b.tile, []).append((a.name, b))
            height[id(b)] = b.height * a.replicas
    for t, placed in by_tile.items():
        if len(placed) < 2:
            continue
        names = {id(b): name for name, b in placed}
        pair = _overlaps([b for _, b in placed],
                         lambda b: (b.tile_row, b.tile_row + height[id(b)], b.tile_col, b.tile_col + b.width))
        if pair is not None:
            x, y = pair
            raise AcompileError(f"node {names[id(x)]!r}: its tile block at ({x.tile_row}, {x.tile_col}) on "
                                f"physical tile {t} overlaps a block of node {names[id(y)]!r} there")
    return nodes
