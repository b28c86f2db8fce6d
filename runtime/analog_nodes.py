"""Which emulator layer runs each analog node: the executor's factories (no physics, and on simulated
chips), and one programmed array for the nodes that share a weight (contract `shares`)."""

from __future__ import annotations

import onnx
import torch

from runtime import contract
from runtime.analog_recurrent import AnalogRecurrentLayer, ideal_recurrent
from runtime.analog_settings import AnalogSettings
from runtime.analog_tile import AnalogLayer, ideal_analog
from runtime.ops import NodeInfo

__all__ = ["analog_factory", "ideal_node"]


def ideal_node(info: NodeInfo, node: onnx.NodeProto):
    """The exact semantics of an ai.acompile node (CONTRACTS §3), no physics."""
    if node.op_type in contract.RECURRENT_OPS:
        return ideal_recurrent(info, node)
    return ideal_analog(info, node)


def analog_factory(settings: AnalogSettings, device: torch.device):
    """Executor factory building the analog layers with the given settings; nodes of one weight
    (contract `shares`: an unrolled RNN's steps, tied weights) read the array the first of them
    programs."""
    arrays: dict[str, AnalogLayer] = {}  # W initializer -> the layer that programs that array

    def make(info: NodeInfo, node: onnx.NodeProto) -> AnalogLayer:
        if node.op_type in contract.RECURRENT_OPS:
            layer: AnalogLayer = AnalogRecurrentLayer(info, node, settings, device)
        else:
            layer = AnalogLayer(info, node, settings, device)
        owner = arrays.setdefault(node.input[contract.IN_W], layer)
        if owner is not layer:
            layer.read_array_of(owner)
        return layer

    return make
