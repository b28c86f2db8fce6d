"""Run an ONNX graph (standard ops + ai.acompile analog nodes) on torch tensors.

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

from compiler.errors import AcompileError
from runtime.ops import OPS, NodeInfo, _load

ANALOG_DOMAIN = "ai.acompile"
AnalogFactory = Callable[[NodeInfo, onnx.NodeProto], Callable[..., Any]]


def to_torch(arr: np.ndarray) -> torch.Tensor:
    """numpy -> torch, keeping dtype (copy so the tensor owns writable memory)."""
    a = np.array(arr, copy=True)
    if a.dtype == np.uint16 or a.dtype == np.uint32 or a.dtype == np.uint64:
        a = a.astype(np.int64)
    return torch.from_numpy(a)


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
    try:
        return onnx.load(str(p))
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


class Executor:
    """A mapped (or plain) ONNX graph as a torch callable: `executor(x) -> output tensor(s)`.

    `analog_factory(info, node)` builds the module for each ai.acompile node; `analog_layers` keeps
    them (in graph order) for programming and compensation; `bn_layers` keeps BatchNormalization
    nodes for the `bn` compensation.
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
        self.analog_layers: list[Any] = []
        self.bn_layers: list[Any] = []
        self.steps: list[tuple[Callable[..., Any], list[str], list[str], str]] = []
        for node in _toposort(list(g.node), set(consts) | set(self.input_names)):
            self._build_node(node, consts)
        self.consts = consts
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
        if node.domain == ANALOG_DOMAIN:
            if node.op_type not in ("AnalogConv", "AnalogMatMul"):
                raise AcompileError(f"node '{name}' ({ANALOG_DOMAIN}::{node.op_type}): unknown analog op")
            if self.analog_factory is None:
                from runtime.analog_tile import ideal_analog

                fn = ideal_analog(info, node)
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

    @torch.no_grad()
    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph; returns every graph output in order."""
        env: dict[str, Any] = dict(self.consts)
        for n, x in zip(self.input_names, inputs, strict=False):
            env[n] = x
        for (fn, ins, outs, name), free in zip(self.steps, self.free_after, strict=False):
            args = [env[i] if i else None for i in ins]
            while args and args[-1] is None:
                args.pop()
            try:
                res = fn(*args)
            except AcompileError:
                raise
            except Exception as exc:
                raise RuntimeError(f"node '{name}' failed: {exc}") from exc
            if isinstance(res, tuple):
                for o, r in zip(outs, res, strict=False):
                    if o:
                        env[o] = r
            else:
                env[outs[0]] = res
            for f in free:
                env.pop(f, None)
        return [env[o] for o in self.output_names]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(*inputs)[0]


def build_executor(model: onnx.ModelProto | str | Path, *, device: str = "cpu",
                   analog_factory: AnalogFactory | None = None) -> Executor:
    """Executor with the given analog factory (default: exact, ideal analog layers)."""
    return Executor(model, device=device, analog_factory=analog_factory)
