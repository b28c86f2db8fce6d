"""ONNX frontend: load, validate and normalize a model before partitioning.

Everything a user can get wrong about the input file is caught here and reported as one AcompileError
line: missing/unreadable file, not a protobuf, truncated file, absurd sizes, external data that points
outside the model's folder (checked before any external byte is read), checker failures, opsets that
cannot be converted. Normalization folds constant weight paths (Identity of an initializer,
Transpose/Reshape of a constant, exporter Shape/Expand chains) but never folds BatchNormalization
into Conv: BN-based drift compensation needs the BN nodes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper, shape_inference

from compiler.recurrent import split_directions
from runtime import contract
from runtime.errors import AcompileError
from runtime.untrusted import check_external_data, external_tensors

MAX_FILE_BYTES = 4 * 1024**3  # 4 GiB
MAX_TENSOR_ELEMENTS = 2**31  # per tensor (any initializer, any inferred shape)
MIN_OPSET = 13
CONVERT_TO_OPSET = 17
MAX_OPSET = onnx.defs.onnx_opset_version()


def check_sizes(model: onnx.ModelProto) -> None:
    """Reject tensors whose declared dims multiply beyond MAX_TENSOR_ELEMENTS (before reading data)."""
    for tensor in external_tensors(model):
        n = 1
        for d in tensor.dims:
            if d < 0:
                raise AcompileError(f"tensor {tensor.name!r}: negative dimension {d}")
            n *= d
        if n > MAX_TENSOR_ELEMENTS:
            raise AcompileError(f"tensor {tensor.name!r}: {n} elements (dims {list(tensor.dims)}) exceed "
                                f"the bound of {MAX_TENSOR_ELEMENTS}")
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        n = 1
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                n *= max(d.dim_value, 1)
        if n > MAX_TENSOR_ELEMENTS:
            raise AcompileError(f"tensor {vi.name!r}: declared shape has {n} elements, above the bound "
                                f"of {MAX_TENSOR_ELEMENTS}")


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and validate the file; external data is checked for safety before it is loaded.

    Runs onnx.checker on the file's bytes (before external data is attached).
    """
    path = Path(path)
    if not path.exists():
        raise AcompileError(f"{str(path)!r}: file not found")
    if not path.is_file():
        raise AcompileError(f"{str(path)!r}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise AcompileError(f"{str(path)!r}: empty file, not an ONNX model")
    if size > MAX_FILE_BYTES:
        raise AcompileError(f"{str(path)!r}: {size} bytes, above the 4 GiB limit")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AcompileError(f"{str(path)!r}: cannot read ({exc.strerror})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise AcompileError(f"{str(path)!r}: not an ONNX model (protobuf does not parse; truncated or "
                            "another format)") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise AcompileError(f"{str(path)!r}: not an ONNX model (no graph with nodes; truncated or another "
                            "format)")
    check_sizes(model)
    check_external_data(model, path.parent)
    has_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_tensors(model))
    # the checker resolves external data relative to the model's folder only when given the path
    check(str(path) if has_external else data, repr(str(path)))
    del data
    if has_external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise AcompileError(f"{str(path)!r}: cannot load external data ({exc})") from None
    return model


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise AcompileError("model has no default-domain (ai.onnx) opset import")


def check(model: onnx.ModelProto | bytes, label: str) -> None:
    """onnx.checker; given the file's bytes it skips a re-serialization of a large model."""
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise AcompileError(f"{label}: ONNX checker: {first}") from None


def convert_opset(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Bring opsets outside [13, newest known] to opset 17 with onnx.version_converter."""
    version = default_opset(model)
    if MIN_OPSET <= version <= MAX_OPSET:
        return model
    if version > MAX_OPSET:
        raise AcompileError(f"{label}: opset {version} is newer than this onnx ({MAX_OPSET}); "
                            "upgrade onnx or export with an older opset")
    try:
        return onnx.version_converter.convert_version(model, CONVERT_TO_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeError/IndexError with C++ text
        raise AcompileError(f"{label}: cannot convert opset {version} to {CONVERT_TO_OPSET} "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def fold_with_onnxscript(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold with the onnxscript optimizer (folding only: no rewrite rules, so no BN fusion)."""
    try:
        from onnxscript import ir
        from onnxscript.optimizer import _constant_folding
    except ImportError:  # optional: our own fold_constant_weights still runs
        return model
    try:
        irm = ir.serde.deserialize_model(model)
        _constant_folding.fold_constants(irm, input_size_limit=MAX_TENSOR_ELEMENTS,
                                         output_size_limit=MAX_TENSOR_ELEMENTS)
        return ir.serde.serialize_model(irm)
    except Exception:  # a folding hiccup must not stop compilation; our own pass covers weights
        return model


_FOLDABLE = ("Identity", "Transpose", "Reshape", "Constant", "Squeeze", "Unsqueeze", "Flatten")


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int"):
            return np.array(helper.get_attribute_value(attr),
                            dtype=np.float32 if attr.name == "value_float" else np.int64)
        if attr.name in ("value_floats", "value_ints"):
            return np.array(helper.get_attribute_value(attr),
                            dtype=np.float32 if attr.name == "value_floats" else np.int64)
    return None


def _flatten(a: np.ndarray, axis: int) -> np.ndarray:
    """ONNX Flatten: axis in [-r, r] (r itself gives [prod, 1]); dims spelled out, so empty tensors work."""
    r = a.ndim
    if not -r <= axis <= r:
        raise ValueError(f"Flatten axis {axis} outside [-{r}, {r}]")
    axis = axis + r if axis < 0 else axis
    return a.reshape(math.prod(a.shape[:axis]), math.prod(a.shape[axis:]))


def _fold(node: onnx.NodeProto, arrs: list[np.ndarray]) -> np.ndarray | None:
    """The value of one foldable node from its constant inputs (None: not folded here)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Constant":
        return _constant_value(node)
    if op == "Identity":
        return arrs[0]
    if op == "Transpose":
        return np.transpose(arrs[0], attrs.get("perm"))
    if op == "Reshape" and len(arrs) == 2:
        shape = [int(s) for s in arrs[1].reshape(-1)]
        if not attrs.get("allowzero", 0):
            shape = [arrs[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return arrs[0].reshape(shape)
    if op == "Flatten":
        return _flatten(arrs[0], int(attrs.get("axis", 1)))
    if op in ("Squeeze", "Unsqueeze") and len(arrs) == 2:
        axes = tuple(int(a) for a in arrs[1].reshape(-1))
        # (an empty Squeeze axes input squeezes nothing here, as in onnx's reference, shape inference
        # and the onnxscript folder; onnxruntime squeezes every size-1 dim: exporters never write one)
        return np.squeeze(arrs[0], axes) if op == "Squeeze" else np.expand_dims(arrs[0], axes)
    return None


def fold_constant_weights(model: onnx.ModelProto) -> None:
    """Replace Identity/Transpose/Reshape/Constant nodes whose inputs are all constant by initializers.

    In place, one pass in node order (exporters emit nodes topologically). This is the guarantee the
    partitioner relies on: a weight reached through such a chain is an initializer afterwards. A value
    keeps its rank and dtype exactly (a 0-d scalar stays 0-d, an empty tensor stays empty). Constant
    inputs the op cannot take (a Reshape to a wrong element count) are an AcompileError naming the node.
    """
    g = model.graph
    consts: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
    keep: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    for node in g.node:
        value = None
        if node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            ins = [i for i in node.input if i]
            if all(i in consts for i in ins):
                try:
                    value = _fold(node, [numpy_helper.to_array(consts[i]) for i in ins])
                except (ValueError, TypeError, IndexError) as exc:  # numpy: the op cannot take them
                    raise AcompileError(f"node {node.name or node.output[0]!r} ({node.op_type}): its "
                                        f"constant inputs do not fit the op ({exc})") from None
        if value is None:
            keep.append(node)
            continue
        # np.asarray(...).copy, not np.ascontiguousarray: that one promotes a 0-d scalar to shape [1],
        # which broke x.view(x.size(0), -1) (Gather of a 0-d index, issue 16)
        t = numpy_helper.from_array(np.asarray(value).copy(order="C"), node.output[0])
        consts[t.name] = t
        new_inits.append(t)
    if new_inits:
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(new_inits)


def needs_general_folding(model: onnx.ModelProto) -> bool:
    """True when some node is foldable beyond our own pass (so the onnxscript import is worth it)."""
    consts = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        ins = [i for i in node.input if i]
        if node.op_type == "Shape" or (node.op_type != "Constant" and ins and all(i in consts for i in ins)):
            return True
        if node.op_type == "Constant":
            consts.update(node.output)
    return False


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique, non-empty name (layer names in reports and ``--digital``)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def infer_shapes(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Fresh shape inference (stale exporter/folder value_info dropped first, it can contradict)."""
    del model.graph.value_info[:]
    try:
        inferred = shape_inference.infer_shapes(_skeleton(model), check_type=False, strict_mode=False,
                                                data_prop=True)
    except Exception as exc:  # InferenceError or C++ RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AcompileError(f"{label}: shape inference failed: {first}") from None
    model.graph.value_info.extend(inferred.graph.value_info)
    for mine, theirs in zip(model.graph.output, inferred.graph.output, strict=True):
        mine.CopyFrom(theirs)
    return model


SKELETON_MIN_ELEMENTS = 4096


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with large initializers' data left out (name, dims and type kept): shape inference
    needs only the shapes of weights, so it need not serialize and re-parse hundreds of MB of them."""
    src = model.graph
    skel = onnx.ModelProto(ir_version=model.ir_version)
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    g = skel.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    for t in src.initializer:
        if math.prod(t.dims) >= SKELETON_MIN_ELEMENTS:
            g.initializer.append(onnx.TensorProto(name=t.name, dims=t.dims, data_type=t.data_type))
        else:
            g.initializer.append(t)
    return skel


STANDARD_DOMAINS = ("", "ai.onnx")


def inline_functions(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Inline model-local functions (exporters wrap modules in them), so every node is a standard op."""
    if not model.functions:
        return model
    try:
        return onnx.inliner.inline_local_functions(model)
    except Exception as exc:  # the inliner raises plain C++ errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AcompileError(f"{label}: cannot inline the model's local functions ({first})") from None


def check_domains(model: onnx.ModelProto) -> None:
    """Every node must be a standard ONNX op (domain ai.onnx): an op of another domain (a runtime's
    contrib op, a custom op) could be neither mapped nor emulated, so it is refused here, at compile
    time, naming the node, not at `acompile eval`."""
    for node in model.graph.node:
        if node.domain in STANDARD_DOMAINS:
            continue
        where = f"node {node.name!r} ({node.domain}::{node.op_type})"
        if node.domain == contract.DOMAIN:
            raise AcompileError(f"{where}: the model is already mapped by acompile; compile the original "
                                "model instead")
        raise AcompileError(f"{where}: op domain {node.domain!r} is not standard ONNX; acompile compiles "
                            "and emulates ai.onnx ops only (export without custom / contrib ops)")


BATCH_SYMBOL = "batch"


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None] | None:
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _has(dims: list | None, symbol: str) -> bool:
    return bool(dims) and symbol in dims


def _infer_with_batch(model: onnx.ModelProto, names: set[str], symbol: str) -> onnx.ModelProto | None:
    """Shape inference of the model with the first dim of the inputs `names` made `symbol`."""
    skel = _skeleton(model)
    for vi in skel.graph.input:
        if vi.name in names:
            vi.type.tensor_type.shape.dim[0].Clear()
            vi.type.tensor_type.shape.dim[0].dim_param = symbol
    for vi in skel.graph.output:  # outputs are re-inferred
        vi.type.tensor_type.ClearField("shape")
    try:
        return shape_inference.infer_shapes(skel, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # an op refuses another batch: the batch is fixed
        return None


def _free_reshapes(model: onnx.ModelProto, inferred: onnx.ModelProto, batch: int, symbol: str) -> int:
    """``x.view(x.size(0), -1)`` exported at a static batch B is a Reshape to the constant [B, -1]: where
    the reshaped tensor's first dim is the batch, make that entry 0 (copy the input's dim; exact at B).
    Returns how many Reshapes were freed."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.input, *inferred.graph.value_info]}
    freed = 0
    for node in g.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue
        data = shapes.get(node.input[0])
        shape = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
        if not data or data[0] != symbol or not len(shape) or int(shape[0]) != batch:
            continue
        new = shape.copy()
        new[0] = 0
        t = numpy_helper.from_array(new, f"{node.input[1]}.batch_free")
        if t.name not in inits:
            g.initializer.append(t)
            inits[t.name] = t
        node.input[1] = t.name
        freed += 1
    return freed


def generalize_batch(model: onnx.ModelProto, label: str) -> int | None:
    """Free a batch size fixed at export when the graph does not depend on it.

    A model exported with a static batch B (input ``[B, ...]``) is re-inferred with that dim symbolic.
    A Reshape to a constant ``[B, ...]`` of a tensor whose first dim is the batch (the exporter's trace
    of ``x.view(x.size(0), -1)``) gets 0 there (copy the batch; exact at B). When then every graph
    output whose first dim was B keeps the symbol there, the graph works at any batch and the model's
    inputs, outputs and value_info take the symbolic shapes (so the mapped model does too). Otherwise B
    is baked in (a Reshape to a constant shape that folds the batch with other dims, as attention heads
    do) and the model is left as it is. Returns the fixed batch size, or None (any batch).
    """
    g = model.graph
    inits = {t.name for t in g.initializer}
    static = [(i, _dims(i)) for i in g.input if i.name not in inits]
    static = [(i, d) for i, d in static if d and len(d) >= 2 and isinstance(d[0], int) and d[0] > 0]
    if not static:
        return None
    sizes = {d[0] for _, d in static}
    out_before = {o.name: _dims(o) for o in g.output}
    batched = [n for n, d in out_before.items() if d and d[0] in sizes]
    if not batched:  # no output starts with that size: the first dim is not a batch, leave it alone
        return None
    if len(sizes) != 1:
        return min(sizes)
    batch = sizes.pop()
    used = {d.dim_param for vi in [*g.input, *g.output, *g.value_info]
            for d in vi.type.tensor_type.shape.dim if d.dim_param}
    symbol = BATCH_SYMBOL
    while symbol in used:
        symbol = "_" + symbol
    names = {i.name for i, _ in static}
    inferred = _infer_with_batch(model, names, symbol)
    if inferred is None:
        return batch
    if _free_reshapes(model, inferred, batch, symbol):  # exact at B, so done in place either way
        inferred = _infer_with_batch(model, names, symbol)
        if inferred is None:
            return batch
    for o in inferred.graph.output:
        before, after = out_before.get(o.name), _dims(o)
        if before and before[0] == batch and not (after and after[0] == symbol):
            return batch
    # the graph works at any batch: take the symbolic shapes
    for mine, theirs in ((g.input, inferred.graph.input), (g.output, inferred.graph.output)):
        by_name = {vi.name: vi for vi in theirs}
        for vi in mine:
            if vi.name in by_name:
                vi.CopyFrom(by_name[vi.name])
    del g.value_info[:]
    g.value_info.extend(inferred.graph.value_info)
    return None


def batch_culprit(model: onnx.ModelProto, batch: int) -> str | None:
    """The first node that fixes the batch: a Reshape (or Expand, ...) to a constant shape that starts
    with the export's batch size or folds it in with other dims. Used only to explain a fixed batch."""
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Reshape", "Expand", "ConstantOfShape", "Tile") and len(node.input) >= 1:
            shape_in = node.input[1] if node.op_type != "ConstantOfShape" else node.input[0]
            if shape_in in consts:
                shape = [int(v) for v in numpy_helper.to_array(consts[shape_in]).reshape(-1)]
                if shape and (shape[0] == batch or (-1 not in shape and 0 not in shape)):
                    return f"node {node.name!r} ({node.op_type}) has the constant shape {shape}"
    return None


def load_and_normalize(path: str | os.PathLike, info: dict | None = None) -> onnx.ModelProto:
    """Read, validate, convert opset, inline functions, check domains, fold constant weight paths, infer
    shapes, free a batch size the graph does not depend on. BN stays a node.

    ``info`` (a dict, optional) receives ``fixed_batch``: the batch size the graph only works at (None:
    any batch)."""
    label = repr(str(path))
    model = read_model(path)
    model = convert_opset(model, label)
    model = inline_functions(model, label)
    name_nodes(model)
    check_domains(model)
    fold_constant_weights(model)
    if needs_general_folding(model):  # e.g. dynamo exports: Shape/Expand/CastLike chains
        model = fold_with_onnxscript(model)
        fold_constant_weights(model)
    name_nodes(model)
    split_directions(model)  # one node per direction of a bidirectional LSTM / GRU / RNN
    model = infer_shapes(model, label)
    check_sizes(model)
    fixed = generalize_batch(model, label)
    if info is not None:
        info["fixed_batch"] = fixed
    return model
