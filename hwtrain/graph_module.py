"""A user's ONNX graph as a trainable torch module: the same nodes, run by the runtime's op registry.

`acompile finetune` trains the graph the user brought, not a re-creation of it. The float initializers
that feed weights, biases and BatchNormalization become parameters under their own names (tied where the
graph shares one tensor), BN nodes run in training mode and update their running statistics, and the
crossbar layers the compiler chose run through an `analog_hook` (hardware-aware noise and periphery).
`write_back` puts the trained values into a copy of the original ModelProto: nodes, names, inputs and
outputs stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from runtime.errors import AcompileError
from runtime.executor import _toposort, decode_attrs, run_step, to_torch
from runtime.ops import OPS, NodeInfo, _load

#: Ops a weight may pass through on its way from an initializer to its layer (exporters emit these).
PASS_THROUGH = ("Identity", "Transpose", "Reshape", "Cast", "Unsqueeze", "Squeeze", "Flatten")
#: Ops that have no gradient or no training semantics here; a graph with them is refused.
UNTRAINABLE = {"Loop", "If", "Scan", "NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "RandomNormal",
               "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}

AnalogHook = Callable[[onnx.NodeProto, NodeInfo], Callable[..., Any]]


def _float_inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)}


def initializer_source(model: onnx.ModelProto, name: str) -> str | None:
    """The float initializer a tensor is (or comes from through Identity/Transpose/... chains), or None
    when it is computed from activations."""
    floats = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for _ in range(17):
        if name in floats:
            return name
        node = producer.get(name)
        if node is None or node.op_type not in PASS_THROUGH or not node.input:
            return None
        name = node.input[0]
    return None


def trainable_initializers(model: onnx.ModelProto) -> dict[str, str]:
    """Initializer name -> its role ('weight', 'bias', 'bn_scale', 'bn_bias', 'bn_stat'): the tensors
    that fine-tuning may change. A weight reached through Identity/Transpose/... chains counts."""
    floats = _float_inits(model)

    def source(name: str) -> str | None:
        src = initializer_source(model, name)
        return src if src in floats else None

    roles: dict[str, str] = {}
    for node in model.graph.node:
        op = node.op_type
        if op == "BatchNormalization":
            for i, role in ((1, "bn_scale"), (2, "bn_bias"), (3, "bn_stat"), (4, "bn_stat")):
                src = source(node.input[i]) if len(node.input) > i else None
                if src:
                    roles[src] = role
        elif op in ("Conv", "Gemm", "MatMul", "ConvTranspose", "LSTM", "GRU", "RNN"):
            pairs = ((1, "weight"), (2, "weight"), (3, "bias")) if op in ("LSTM", "GRU", "RNN") \
                else ((1, "weight"), (2, "bias"))
            for i, role in pairs:
                src = source(node.input[i]) if len(node.input) > i and node.input[i] else None
                if src and floats[src].ndim >= (2 if role == "weight" else 1):
                    roles[src] = role
    return roles


class TrainBatchNorm:
    """ONNX BatchNormalization with training semantics: batch statistics in training mode, running
    statistics updated with the node's momentum (ONNX: running = momentum * running + (1 - m) * batch)."""

    def __init__(self, info: NodeInfo, module: OnnxGraphModule, mean_name: str, var_name: str) -> None:
        self.eps = float(info.attrs.get("epsilon", 1e-5))
        self.momentum = 1.0 - float(info.attrs.get("momentum", 0.9))
        self.module, self.mean_name, self.var_name = module, mean_name, var_name

    def __call__(self, x, scale, bias, mean, var):
        m = self.module
        rm, rv = m.buffer(self.mean_name), m.buffer(self.var_name)
        momentum = self.momentum if m.bn_momentum is None else m.bn_momentum
        return F.batch_norm(x, rm, rv, scale, bias, m.training, momentum, self.eps)


class OnnxGraphModule(nn.Module):
    """Run `model` (a standard ONNX graph) with trainable initializers.

    `analog(node)` -> True for nodes that run on crossbars; `analog_hook(node, info)` builds their
    callable, which receives the node's run-time inputs (activations, weight, bias)."""

    def __init__(self, model: onnx.ModelProto, *, analog: set[str] | None = None,
                 analog_hook: AnalogHook | None = None) -> None:
        super().__init__()
        _load()
        self.model = model
        #: overrides every BN node's momentum while set (re-estimating statistics as a running average)
        self.bn_momentum: float | None = None
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                raise AcompileError(f"node '{node.name or node.output[0]}' ({node.domain}::{node.op_type}): "
                                    "a custom-domain op cannot be trained; give the standard ONNX model")
            if node.op_type in UNTRAINABLE:
                raise AcompileError(f"node '{node.name or node.output[0]}' ({node.op_type}): this op cannot "
                                    "be trained by finetune (no gradient or sub-graphs)")
            if node.op_type not in OPS:
                raise AcompileError(f"node '{node.name or node.output[0]}' ({node.op_type}): unsupported "
                                    f"ONNX op '{node.op_type}'")
        self.roles = trainable_initializers(model)
        floats = _float_inits(model)
        self.names: list[str] = []  # parameter i <-> initializer name
        self.params = nn.ParameterList()
        self.buffer_names: list[str] = []
        for name, role in self.roles.items():
            t = torch.from_numpy(np.array(floats[name], dtype=np.float32, copy=True))
            if role == "bn_stat":
                self.register_buffer(f"stat{len(self.buffer_names)}", t)
                self.buffer_names.append(name)
            else:
                self.params.append(nn.Parameter(t))
                self.names.append(name)
        self._param_index = {n: i for i, n in enumerate(self.names)}
        self._buffer_index = {n: i for i, n in enumerate(self.buffer_names)}
        live = set(self.roles)
        consts: dict[str, torch.Tensor] = {t.name: to_torch(numpy_helper.to_array(t)) for t in g.initializer
                                           if t.name not in live}
        self.input_names = [i.name for i in g.input if i.name not in consts and i.name not in live]
        self.output_names = [o.name for o in g.output]
        self.steps: list[tuple[Callable[..., Any], list[str], list[str], str]] = []
        self.analog_names: list[str] = []
        analog = analog or set()
        self._stat_users: dict[str, int] = {}
        for node in g.node:
            if node.op_type == "BatchNormalization":
                for i in node.input[3:5]:
                    src = initializer_source(model, i)
                    self._stat_users[src] = self._stat_users.get(src, 0) + 1
        for node in _toposort(list(g.node), set(consts) | live | set(self.input_names)):
            self._build(node, consts, analog, analog_hook)
        self.consts = consts

    def move_constants(self, device: torch.device) -> None:
        """Move the folded constants too (`.to(device)` moves parameters and buffers only)."""
        self.consts = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.consts.items()}

    # ---- parameters by initializer name ---------------------------------------------------------
    def param(self, name: str) -> nn.Parameter:
        return self.params[self._param_index[name]]

    def buffer(self, name: str) -> torch.Tensor:
        return getattr(self, f"stat{self._buffer_index[name]}")

    def tensor(self, name: str) -> torch.Tensor:
        if name in self._param_index:
            return self.param(name)
        return self.buffer(name)

    # ---- graph ----------------------------------------------------------------------------------
    def _build(self, node: onnx.NodeProto, consts: dict[str, torch.Tensor], analog: set[str],
               hook: AnalogHook | None) -> None:
        name = node.name or (node.output[0] if node.output else node.op_type)
        attrs = decode_attrs(node)
        if node.op_type in ("Conv", "ConvTranspose") and "kernel_shape" not in attrs and len(node.input) > 1 \
                and node.input[1] in self._param_index:  # optional in ONNX; a trained weight is no constant
            attrs["kernel_shape"] = list(self.param(node.input[1]).shape[2:])
        info = NodeInfo(name=name, op_type=node.op_type, attrs=attrs,
                        consts=[consts.get(i) if i else None for i in node.input], n_inputs=len(node.input),
                        n_outputs=len(node.output), opset=self.opset)
        if node.output and node.output[0] in analog and hook is not None:
            fn = hook(node, info)
            self.analog_names.append(name)
        elif node.op_type == "BatchNormalization":
            stats = [initializer_source(self.model, i) for i in node.input[3:5]]
            if len(node.input) != 5 or any(s not in self._buffer_index for s in stats):
                raise AcompileError(f"node '{name}' (BatchNormalization): running mean and variance must be "
                                    "initializers to be fine-tuned")
            if any(self._stat_users[s] > 1 for s in stats):
                raise AcompileError(f"node '{name}' (BatchNormalization): its running statistics are one "
                                    "tensor shared with other BN nodes (an exporter de-duplicates equal "
                                    "tensors, e.g. of an untrained model), so they cannot be fine-tuned "
                                    "apart; export the trained model")
            if len([o for o in node.output if o]) > 1:
                raise AcompileError(f"node '{name}' (BatchNormalization): training-mode outputs are not "
                                    "supported; export the model in eval mode with BN kept")
            fn = TrainBatchNorm(info, self, stats[0], stats[1])
        else:
            fn = OPS[node.op_type](info)
            if node.op_type != "Dropout" and all((not i) or i in consts for i in node.input):
                with torch.no_grad():  # a constant sub-graph (shapes, ...): fold it once
                    outs = fn(*[consts.get(i) if i else None for i in node.input])
                outs = outs if isinstance(outs, tuple) else (outs,)
                for o, v in zip(node.output, outs, strict=False):
                    if o:
                        consts[o] = v
                return
        self.steps.append((fn, list(node.input), list(node.output), name))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = dict(self.consts)
        for n in self.names:
            env[n] = self.param(n)
        for n in self.buffer_names:
            env[n] = self.buffer(n)
        for n, x in zip(self.input_names, inputs, strict=False):
            env[n] = x
        for fn, ins, outs, name in self.steps:
            run_step(env, fn, ins, outs, name, AcompileError)
        return env[self.output_names[0]]

    # ---- results --------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every trainable initializer's current value (float32), by its ONNX name."""
        out = {n: self.param(n).detach().cpu().numpy() for n in self.names}
        out.update({n: self.buffer(n).detach().cpu().numpy() for n in self.buffer_names})
        return out

    @torch.no_grad()
    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for n, a in arrays.items():
            t = self.tensor(n)
            if tuple(a.shape) != tuple(t.shape):
                raise AcompileError(f"checkpoint tensor {n!r} has shape {list(a.shape)}, the graph needs "
                                    f"{list(t.shape)}")
            t.copy_(torch.from_numpy(np.asarray(a, np.float32)))

    def write_back(self) -> onnx.ModelProto:
        """A copy of the original model with the trained values in its initializers (dtype kept)."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        values = self.state_arrays()
        for t in out.graph.initializer:
            if t.name in values:
                keep = t.data_type == onnx.TensorProto.FLOAT
                dtype = np.float32 if keep else numpy_helper.to_array(t).dtype
                new = numpy_helper.from_array(values[t.name].astype(dtype), t.name)
                t.CopyFrom(new)
        return out
