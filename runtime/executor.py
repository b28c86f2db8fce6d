"""Run an ONNX graph (standard ops + the analog nodes of runtime.contract) on torch tensors.

Built once per model: initializers become tensors, attributes are decoded, constant sub-graphs are
folded and every node gets its converter's callable, so a batch only runs torch calls.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from runtime import contract
from runtime.epilogue import fuse_epilogues
from runtime.errors import AcompileError
from runtime.ops import OPS, NodeInfo, _load
from runtime.untrusted import load_checked

AnalogFactory = Callable[[NodeInfo, onnx.NodeProto], Callable[..., Any]]
#: Graph passes run over the step list once it is built, in order.
PASSES = (fuse_epilogues,)


# torch has uint16/32/64 but few ops on them: the executor holds those values as int64 (exact for
# uint16/32; uint64 keeps its bit pattern) and gives graph outputs back in their declared type
_UNSIGNED = {onnx.TensorProto.UINT16: torch.uint16, onnx.TensorProto.UINT32: torch.uint32,
             onnx.TensorProto.UINT64: torch.uint64}
# ml_dtypes floats (what onnx.numpy_helper gives for these) that torch.from_numpy refuses: same bits
_ML_FLOATS = {"bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn,
              "float8_e5m2": torch.float8_e5m2, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
              "float8_e5m2fnuz": torch.float8_e5m2fnuz}


def to_torch(arr: np.ndarray) -> torch.Tensor:
    """numpy -> torch, keeping dtype and rank (a 0-d array stays 0-d; a copy the tensor owns).

    uint16/32/64 become int64 (see _UNSIGNED); bfloat16 and float8 keep their type bit for bit; int4 /
    uint4 widen to int8 / uint8; a type torch cannot hold (strings) is an AcompileError.
    """
    a = np.array(arr, copy=True)
    if a.dtype == np.uint16 or a.dtype == np.uint32 or a.dtype == np.uint64:
        a = a.astype(np.int64)
    elif a.dtype.name in _ML_FLOATS:
        bits = np.uint8 if a.dtype.itemsize == 1 else np.int16
        return torch.from_numpy(a.view(bits)).view(_ML_FLOATS[a.dtype.name])
    elif a.dtype.name in ("int4", "uint4"):
        a = a.astype(np.int8 if a.dtype.name == "int4" else np.uint8)
    try:
        return torch.from_numpy(a)
    except TypeError:
        raise AcompileError(f"a tensor of type {a.dtype} is not supported by the emulator") from None


def decode_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """ONNX attributes -> Python values (bytes -> str, tensors -> torch)."""
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise AcompileError(f"node '{node.name}' ({node.op_type}): sub-graphs are not supported")
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = to_torch(numpy_helper.to_array(v))
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        out[a.name] = v
    return out


def load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """Load an ONNX file (external data included) or pass a ModelProto through."""
    if isinstance(model, onnx.ModelProto):
        return model
    p = Path(model)
    if not p.exists():
        raise AcompileError(f"model file '{p}' does not exist")
    if not p.is_file():
        raise AcompileError(f"'{p}': not a file")
    if p.stat().st_size == 0:  # onnx.load reads it as an empty model
        raise AcompileError(f"'{p}': empty file, not an ONNX model")
    try:
        return load_checked(p)
    except AcompileError as exc:
        raise AcompileError(f"'{p}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise AcompileError(f"'{p}' is not a readable ONNX model: {exc}") from exc


def _toposort(nodes: list[onnx.NodeProto], known: set[str]) -> list[onnx.NodeProto]:
    avail = set(known) | {""}
    pending = list(nodes)
    order: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                order.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            n = rest[0]
            missing = [i for i in n.input if i not in avail]
            raise AcompileError(f"node '{n.name}' ({n.op_type}): input(s) {missing} are never produced")
        pending = rest
    return order


def run_step(env: dict[str, Any], fn: Callable[..., Any], ins: list[str], outs: list[str], name: str,
             error: type[Exception] = RuntimeError) -> None:
    """Run one node on the tensors in `env` (trailing optional inputs dropped) and store its outputs."""
    args = [env[i] if i else None for i in ins]
    while args and args[-1] is None:
        args.pop()
    try:
        res = fn(*args)
    except AcompileError:
        raise
    except Exception as exc:
        raise error(f"node '{name}' failed: {exc}") from exc
    if isinstance(res, tuple):
        for o, r in zip(outs, res, strict=False):
            if o:
                env[o] = r
    else:
        env[outs[0]] = res


class Executor:
    """A mapped (or plain) ONNX graph as a torch callable: `executor(x) -> output tensor(s)`.

    `analog_factory(info, node)` builds the module for each analog (contract.DOMAIN) node;
    `analog_layers` keeps them (in graph order) for programming and compensation; `bn_layers` keeps
    BatchNormalization nodes for the `bn` compensation.
    """

    def __init__(self, model: onnx.ModelProto | str | Path, *, device: str | torch.device = "cpu",
                 analog_factory: AnalogFactory | None = None) -> None:
        _load()
        self.analog_factory = analog_factory
        self.model = load_model(model)
        self.device = torch.device(device)
        g = self.model.graph
        self.opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        consts: dict[str, torch.Tensor] = {
            t.name: to_torch(numpy_helper.to_array(t)).to(self.device) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in consts]
        self.output_names = [o.name for o in g.output]
        self.output_casts = {o.name: _UNSIGNED[o.type.tensor_type.elem_type] for o in g.output
                             if o.type.tensor_type.elem_type in _UNSIGNED}
        self.analog_layers: list[Any] = []
        self.bn_layers: list[Any] = []
        self.steps: list[tuple[Callable[..., Any], list[str], list[str], str]] = []
        self.step_ops: list[str] = []
        for node in _toposort(list(g.node), set(consts) | set(self.input_names)):
            self._build_node(node, consts)
        self.consts = consts
        for graph_pass in PASSES:  # torch.fx style: build the step list, then rewrite it
            self.steps, self.step_ops = graph_pass(self.steps, self.step_ops, consts, set(self.output_names))
        # free intermediates after their last use
        last: dict[str, int] = {}
        for k, (_, ins, _, _) in enumerate(self.steps):
            for i in ins:
                last[i] = k
        keep = set(self.output_names)
        self.free_after = [[i for i in set(ins) if last.get(i) == k and i not in keep and i not in consts]
                           for k, (_, ins, _, _) in enumerate(self.steps)]

    def _build_node(self, node: onnx.NodeProto, consts: dict[str, torch.Tensor]) -> None:
        attrs = decode_attrs(node)
        name = node.name or (node.output[0] if node.output else node.op_type)
        info = NodeInfo(name=name, op_type=node.op_type, attrs=attrs,
                        consts=[consts.get(i) if i else None for i in node.input], n_inputs=len(node.input),
                        n_outputs=len(node.output), opset=self.opset)
        if node.domain == contract.DOMAIN:
            if node.op_type not in contract.ANALOG_OPS:
                raise AcompileError(f"node '{name}' ({contract.DOMAIN}::{node.op_type}): unknown analog op")
            if self.analog_factory is None:
                from runtime.analog_nodes import ideal_node

                fn = ideal_node(info, node)
            else:
                fn = self.analog_factory(info, node)
            self.analog_layers.append(fn)
        elif node.domain not in ("", "ai.onnx"):
            raise AcompileError(f"node '{name}' ({node.domain}::{node.op_type}): unsupported op domain")
        else:
            conv = OPS.get(node.op_type)
            if conv is None:
                raise AcompileError(f"node '{name}' ({node.op_type}): unsupported ONNX op '{node.op_type}'")
            fn = conv(info)
            if "bn" in info.extra:
                self.bn_layers.append(info.extra["bn"])
            foldable = node.op_type not in ("BatchNormalization", "Dropout") and all(
                (not i) or i in consts for i in node.input)
            if foldable:
                with torch.no_grad():
                    outs = fn(*[consts.get(i) if i else None for i in node.input])
                outs = outs if isinstance(outs, tuple) else (outs,)
                for o, v in zip(node.output, outs, strict=False):
                    if o:
                        consts[o] = v.to(self.device) if isinstance(v, torch.Tensor) else v
                return
        self.steps.append((fn, list(node.input), list(node.output), name))
        self.step_ops.append(node.op_type)

    @torch.no_grad()
    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph; returns every graph output in order."""
        env: dict[str, Any] = dict(self.consts)
        for n, x in zip(self.input_names, inputs, strict=False):
            env[n] = x.to(torch.int64) if x.dtype in _UNSIGNED.values() else x
        for (fn, ins, outs, name), free in zip(self.steps, self.free_after, strict=False):
            run_step(env, fn, ins, outs, name)
            for f in free:
                env.pop(f, None)
        outs = [env[o] for o in self.output_names]
        return [x.to(self.output_casts[o]) if o in self.output_casts and isinstance(x, torch.Tensor) else x
                for o, x in zip(self.output_names, outs, strict=True)]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(*inputs)[0]
