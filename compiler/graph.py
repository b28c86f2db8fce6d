"""Graph analysis with networkx: topological order, dead-node removal, first/last analog layers.

Nodes of the DiGraph are node names (unique after frontend.name_nodes); an edge u -> v means v reads a
tensor that u writes.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from runtime.errors import AcompileError


class GraphInfo:
    """A DiGraph over an ONNX graph plus lookups for constants and inferred shapes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.nodes: dict[str, onnx.NodeProto] = {n.name: n for n in g.node}
        self.producer: dict[str, str] = {}
        for n in g.node:
            for out in n.output:
                if out:
                    self.producer[out] = n.name
        self.dg = nx.DiGraph()
        self.dg.add_nodes_from(self.nodes)
        for n in g.node:
            for inp in n.input:
                src = self.producer.get(inp)
                if src is not None:
                    self.dg.add_edge(src, n.name)
        # An initializer also listed as a graph input (old IR) is treated as the constant it holds.
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.shapes: dict[str, list[int | str | None]] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                self.shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in vi.type.tensor_type.shape.dim
                ]
        for t in g.initializer:
            self.shapes[t.name] = list(t.dims)
        # the batch: the first dim of every graph input, symbolic (any batch) or a size fixed at export
        self.batch_symbols: set[str] = set()
        self.static_batch: int | None = None
        for vi in g.input:
            dims = self.shapes.get(vi.name)
            if vi.name in self.initializers or not dims:
                continue
            if isinstance(dims[0], str):
                self.batch_symbols.add(dims[0])
            elif isinstance(dims[0], int) and dims[0] > 0:
                self.static_batch = dims[0]

    def topo_order(self) -> list[str]:
        try:
            return list(nx.lexicographical_topological_sort(self.dg, key=self._index))
        except nx.NetworkXUnfeasible:
            raise AcompileError("the graph has a cycle") from None

    def _index(self, name: str) -> int:
        return self._order.get(name, 0)

    @property
    def _order(self) -> dict[str, int]:
        if not hasattr(self, "_order_cache"):
            self._order_cache = {n.name: i for i, n in enumerate(self.model.graph.node)}
        return self._order_cache

    def const(self, name: str) -> np.ndarray | None:
        """The value of a tensor if it is a constant initializer (after frontend folding)."""
        t = self.initializers.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def shape(self, name: str) -> list[int | str | None] | None:
        return self.shapes.get(name)

    def first_last(self, analog: Iterable[str]) -> tuple[set[str], set[str]]:
        """Analog nodes with no analog ancestor (first layers) and no analog descendant (last)."""
        analog = set(analog)
        first, last = set(), set()
        for n in analog:
            if not (nx.ancestors(self.dg, n) & analog):
                first.add(n)
            if not (nx.descendants(self.dg, n) & analog):
                last.add(n)
        return first, last


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes whose outputs never reach a graph output, and unused initializers. Returns #removed."""
    info = GraphInfo(model)
    g = model.graph
    outputs = {o.name for o in g.output}
    sinks = {info.producer[o] for o in outputs if o in info.producer}
    live: set[str] = set(sinks)
    for s in sinks:
        live |= nx.ancestors(info.dg, s)
    dead = [n for n in g.node if n.name not in live]
    if dead:
        keep = [n for n in g.node if n.name in live]
        del g.node[:]
        g.node.extend(keep)
    drop_unused_initializers(g)
    return len(dead)


def drop_unused_initializers(g: onnx.GraphProto) -> None:
    """Remove initializers no node or output reads (and their graph-input entries, for old IR)."""
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    dropped = {t.name for t in g.initializer if t.name not in used}
    if not dropped:
        return
    keep = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(keep)
    if any(i.name in dropped for i in g.input):  # old IR: initializers listed as inputs too
        inputs = [i for i in g.input if i.name not in dropped]
        del g.input[:]
        g.input.extend(inputs)
