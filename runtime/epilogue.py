"""Epilogue fusion, an executor pass: the digital nodes right after an analog layer (inference BN, a
residual Add, ReLU) run inside the layer's own output pass, so a fused block costs one pass over its
output instead of four."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Step = tuple[Callable[..., Any], list[str], list[str], str]  # (callable, inputs, outputs, node name)


@dataclass
class Epilogue:
    """Digital nodes right after an analog layer that it applies in its own output pass:
    inference BatchNormalization (folded into the rescale), a residual Add, then ReLU."""

    bn: Any = None  # runtime.ops.nn.BatchNorm
    bn_args: list[torch.Tensor] = field(default_factory=list)  # its constant scale, bias, mean, var
    residual: bool = False  # the layer's call gets the tensor to add as its last argument
    relu: bool = False


def fuse_epilogues(steps: list[Step], step_ops: list[str], consts: dict[str, Any], outputs: set[str]
                   ) -> tuple[list[Step], list[str]]:
    """The executor pass: analog layer -> [BatchNormalization] -> [Add residual] -> [Relu], each node the
    only reader of the one before, becomes one step; the layer applies them in its own output pass
    (`set_epilogue`). Returns the new steps and their op types."""
    readers: dict[str, list[int]] = {}
    for k, (_, ins, _, _) in enumerate(steps):
        for i in ins:
            readers.setdefault(i, []).append(k)

    def next_step(name: str, op: str) -> int | None:
        r = readers.get(name, [])
        ok = len(r) == 1 and name not in outputs and step_ops[r[0]] == op and r[0] not in drop
        return r[0] if ok and len([o for o in steps[r[0]][2] if o]) == 1 else None

    drop: set[int] = set()  # steps absorbed by an earlier chain are not claimed again
    moved: dict[int, tuple[int, tuple]] = {}  # chain's last step -> (analog step, fused step)
    for k, (fn, ins, outs, name) in enumerate(steps):
        if not getattr(fn, "fuses_epilogue", False) or len(outs) != 1:
            continue
        ep, cur, extra, last = Epilogue(), outs[0], [], k
        j = next_step(cur, "BatchNormalization")
        if j is not None:
            bn_ins = steps[j][1]
            if bn_ins[0] == cur and len(bn_ins) == 5 and all(i in consts for i in bn_ins[1:]):
                ep.bn, ep.bn_args = steps[j][0], [consts[i] for i in bn_ins[1:]]
                drop.add(j)
                cur, last = steps[j][2][0], j
        j = next_step(cur, "Add")
        if j is not None:
            add_ins = steps[j][1]
            other = [i for i in add_ins if i != cur]
            if len(add_ins) == 2 and len(other) == 1 and other[0] not in consts:
                ep.residual, extra = True, other
                drop.add(j)
                cur, last = steps[j][2][0], j
        j = next_step(cur, "Relu")
        if j is not None:
            ep.relu = True
            drop.add(j)
            cur, last = steps[j][2][0], j
        if cur != outs[0]:
            fn.set_epilogue(ep)
            # runs where the chain ended: a residual may be computed after the analog node
            moved[last] = (k, (fn, ins + extra, [cur], name))
            drop.add(k)
    new_steps, ops = [], []
    for k, st in enumerate(steps):
        if k in moved:
            a, fused = moved[k]
            new_steps.append(fused)
            ops.append(step_ops[a])
        elif k not in drop:
            new_steps.append(st)
            ops.append(step_ops[k])
    return new_steps, ops
