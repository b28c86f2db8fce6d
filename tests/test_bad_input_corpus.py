"""A generated corpus of bad input: every case is refused cleanly and no user file is lost.

The corpus is built here, deterministically (seeded), in four categories:

* onnx    -- hostile model files for every command that reads one: random bytes, truncated models at
             several cut points, other protobuf messages, empty files, folders, graphs with a cycle,
             dangling inputs, duplicate outputs, unknown ops and domains, huge or negative dims, NaN/Inf
             and zero-size weights, external data leaving the model's folder (../, absolute, symlink),
             missing or short external data, bad opsets, models without an analog layer, a mapped model
             where a plain one is expected and vice versa, mapped models with broken metadata;
* toml    -- target files generated from the schema (compiler.targets.SCHEMA and every device model's
             keys): for every key a wrong type and out-of-range values, unknown keys in every section,
             sections that are not tables, bad bases, invalid TOML;
* option  -- every typed option of every command (introspected from the click commands) with -1, 0,
             nan, inf, 'abc', huge, empty and list values, kept only where an independent oracle (the
             bounds of CONTRACTS §2) says the value must be refused;
* output  -- every output flag of every command: an input file (also through a hard or symbolic link),
             another output, a folder, an unwritable folder, a folder that is a file, a read-only file,
             a special file, '-', a wrong suffix.

Each case runs `acompile` in-process (click's CliRunner, stderr apart, file descriptors captured where the
click version can) in a fresh folder holding a compiled model with its reports, and must end with the
expected exit code (2 for every error), exactly one stderr line `acompile: error: ...` naming the culprit,
no traceback, and every file of the folder byte-identical afterwards (sha256), with no new file or folder
except the outputs the case names. A case that takes more than CASE_TIMEOUT_S fails (a hang is a bug).
A few cases also run in real processes (`python -m compiler.cli`) to check what a user's terminal shows.

Run: `python -m pytest -q tests/test_bad_input_corpus.py`.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gzip
import hashlib
import inspect
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from runtime.errors import AcompileError

ROOT = Path(__file__).resolve().parents[1]
MNIST_1K = ROOT / "models" / "data" / "mnist-test-1k.npz"
SEED = 20250607
CASE_TIMEOUT_S = 20
MIN_CASES = 200
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---- the case -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input. `args` are templates: {d} is the case's folder (also the working directory)."""

    id: str
    category: str
    args: tuple[str, ...]
    needle: str | tuple[str, ...] | None  # what the error line must mention (one of, for a tuple)
    setup: Callable[[Path], None] | None = None  # writes the case's hostile files into the folder
    code: int = 2
    outputs: tuple[str, ...] = ()  # files the case names as outputs: the only ones that may appear
    flag: str | None = None  # the option the error line must name (option and output cases)
    marks: tuple = field(default=())


def _id(*parts: object) -> str:
    text = "-".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9_.=+,-]+", "_", text)[:120]


# ---- model builders -------------------------------------------------------------------------------------
def _preprocessing() -> str:
    return json.dumps({"layout": "flat", "scale": 1 / 255, "mean": [0.1307], "std": [0.3081],
                       "input_shape": [1, 28, 28], "dataset": "mnist"})


def small_mlp(*, opset: int = 17, hidden: int = 16) -> onnx.ModelProto:
    """input [batch, 784] -> Gemm fc1 -> Relu -> Gemm fc2 -> logits [batch, 10], with preprocessing
    metadata (the bundled MLP's shape, 16 hidden units so that the corpus stays small)."""
    rng = np.random.default_rng(SEED)
    w1 = (rng.standard_normal((hidden, 784)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((10, hidden)) * 0.2).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "fc1.weight"), numpy_helper.from_array(np.zeros(hidden, np.float32),
                                                                                "fc1.bias"),
             numpy_helper.from_array(w2, "fc2.weight"), numpy_helper.from_array(np.zeros(10, np.float32),
                                                                                "fc2.bias")]
    nodes = [helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                       ["batch", 784])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    helper.set_model_props(m, {"acompile.preprocessing": _preprocessing()})
    return m


def relu_only() -> onnx.ModelProto:
    """A model without any weight layer (nothing maps onto a crossbar)."""
    m = small_mlp()
    del m.graph.node[:]
    del m.graph.initializer[:]
    m.graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "s"),
                                numpy_helper.from_array(np.array([10], np.int64), "e"),
                                numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m.graph.node.extend([helper.make_node("Relu", ["input"], ["h"], name="relu"),
                         helper.make_node("Slice", ["h", "s", "e", "ax"], ["logits"], name="slice")])
    return m


def _init(m: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in m.graph.initializer if t.name == name)


def _node(m: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.name == name)


def _set_array(m: onnx.ModelProto, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    t = _init(m, name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name))


def _poke(value: float, where: tuple[int, ...] = (3, 5)) -> Callable[[np.ndarray], np.ndarray]:
    def fn(a: np.ndarray) -> np.ndarray:
        a[where[: a.ndim]] = value
        return a

    return fn


# graph mutations of the small MLP: name -> (mutate(model, folder), what the error names)
Mutation = Callable[[onnx.ModelProto, Path], None]


def _m_cycle(m, d):  # relu reads fc2's output, fc2 reads relu's: relu -> fc2 -> relu
    _node(m, "relu").input[0] = "logits"


def _m_self_loop(m, d):
    _node(m, "relu").input[0] = "r"


def _m_cycle_three(m, d):  # fc1 <- fc2 <- relu <- fc1 with a side output
    _node(m, "fc1").input[0] = "r"


def _m_dangling_input(m, d):
    _node(m, "relu").input[0] = "nowhere"


def _m_dangling_weight(m, d):
    m.graph.initializer.remove(_init(m, "fc2.weight"))


def _m_dangling_output(m, d):
    m.graph.output[0].name = "not_produced"


def _m_dup_node_output(m, d):
    _node(m, "fc2").output[0] = "h"
    m.graph.output[0].name = "h"


def _m_dup_graph_input(m, d):  # a node writes the graph's input
    _node(m, "relu").output[0] = "input"
    _node(m, "fc2").input[0] = "input"


def _m_dup_initializer(m, d):
    m.graph.initializer.append(numpy_helper.from_array(np.ones((10, 16), np.float32), "fc2.weight"))


def _m_unknown_op(m, d):
    _node(m, "relu").op_type = "FancyRelu"


def _m_empty_op(m, d):
    _node(m, "relu").op_type = ""


def _m_lowercase_op(m, d):
    _node(m, "fc1").op_type = "gemm"


def _m_unknown_domain(m, d):
    _node(m, "relu").domain = "com.example"


def _m_unknown_domain_imported(m, d):
    _node(m, "relu").domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))


def _m_ml_domain(m, d):
    n = _node(m, "relu")
    n.domain, n.op_type = "ai.onnx.ml", "Normalizer"
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))


def _m_own_domain_unknown_op(m, d):
    n = _node(m, "relu")
    n.domain, n.op_type = "ai.acompile", "AnalogRelu"
    m.opset_import.append(helper.make_opsetid("ai.acompile", 1))


def _dims(m, name, dims):
    t = _init(m, name)
    t.ClearField("raw_data")
    t.ClearField("float_data")
    del t.dims[:]
    t.dims.extend(dims)


def _m_huge_weight(m, d):
    _dims(m, "fc1.weight", [1 << 20, 1 << 20])


def _m_huge_weight_2_62(m, d):
    _dims(m, "fc1.weight", [1 << 31, 1 << 31])


def _m_negative_dim(m, d):
    _dims(m, "fc1.weight", [-16, 784])


def _m_huge_input(m, d):
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = 1 << 40


def _m_huge_value_info(m, d):
    m.graph.value_info.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, [1 << 30, 1 << 30]))


def _m_nan_weight(m, d):
    _set_array(m, "fc1.weight", _poke(np.nan))


def _m_inf_weight(m, d):
    _set_array(m, "fc1.weight", _poke(np.inf))


def _m_neg_inf_weight(m, d):
    _set_array(m, "fc2.weight", _poke(-np.inf))


def _m_nan_bias(m, d):
    _set_array(m, "fc2.bias", _poke(np.nan))


def _m_all_nan(m, d):
    _set_array(m, "fc1.weight", lambda a: np.full_like(a, np.nan))


def _m_size_mismatch(m, d):  # declared [16, 784], raw data of 3 floats
    t = _init(m, "fc1.weight")
    t.raw_data = np.ones(3, np.float32).tobytes()


def _m_no_data(m, d):  # declared [16, 784], no data at all
    _dims(m, "fc1.weight", [16, 784])


def _m_zero_size_data(m, d):  # declared zero-size, data present
    t = _init(m, "fc1.weight")
    del t.dims[:]
    t.dims.extend([0, 784])


def _external(m: onnx.ModelProto, name: str, location: str, **extra: str) -> None:
    t = _init(m, name)
    raw = numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    info = {"location": location, "offset": "0", "length": str(len(raw)), **extra}
    for k, v in info.items():
        t.external_data.append(onnx.StringStringEntryProto(key=k, value=v))


def _secret(d: Path) -> bytes:
    """A file beside (outside) the model's folder that must never be read: the weights, by size."""
    raw = numpy_helper.to_array(_init(small_mlp(), "fc1.weight")).tobytes()
    (d / "secret.bin").write_bytes(raw)
    return raw


def _ext(location: str | Callable[[Path], str], **extra: str) -> Mutation:
    def mutate(m, d):
        raw = _secret(d)
        (d / "model").mkdir(exist_ok=True)
        (d / "model" / "w.bin").write_bytes(raw)
        _external(m, "fc1.weight", location(d) if callable(location) else location, **extra)

    return mutate


def _m_ext_symlink_out(m, d):
    _ext("link.bin")(m, d)
    (d / "model" / "link.bin").symlink_to(d / "secret.bin")


def _m_ext_symlinked_dir(m, d):
    _ext("sub/w.bin")(m, d)
    (d / "outside").mkdir()
    shutil.copy(d / "secret.bin", d / "outside" / "w.bin")
    (d / "model" / "sub").symlink_to(d / "outside", target_is_directory=True)


def _m_ext_constant_escape(m, d):
    """External data on a Constant node's tensor (not an initializer) leaving the folder."""
    _secret(d)
    t = _init(m, "fc2.bias")
    m.graph.initializer.remove(t)
    const = helper.make_node("Constant", [], ["fc2.bias"], name="bias_const",
                             value=numpy_helper.from_array(np.zeros(10, np.float32), "fc2.bias"))
    m.graph.node.insert(0, const)
    ct = m.graph.node[0].attribute[0].t  # insert() copied the node
    ct.ClearField("raw_data")
    ct.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "../secret.bin", "offset": "0", "length": "40"}.items():
        ct.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    (d / "model").mkdir(exist_ok=True)


def _opset(version: int) -> Mutation:
    def mutate(m, d):
        m.opset_import[0].version = version

    return mutate


def _m_no_default_opset(m, d):
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("com.example", 1))


def _ir(version: int) -> Mutation:
    def mutate(m, d):
        m.ir_version = version

    return mutate


#: name -> (mutation, needle of the error line). The model lands in {d}/model/x.onnx.
MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "cycle": (_m_cycle, "x.onnx"),
    "self-loop": (_m_self_loop, "x.onnx"),
    "cycle-through-input-node": (_m_cycle_three, "x.onnx"),
    "dangling-input": (_m_dangling_input, "nowhere"),
    "dangling-weight": (_m_dangling_weight, "fc2.weight"),
    "dangling-graph-output": (_m_dangling_output, "not_produced"),
    "duplicate-node-output": (_m_dup_node_output, "x.onnx"),
    "node-writes-graph-input": (_m_dup_graph_input, "x.onnx"),
    "duplicate-initializer": (_m_dup_initializer, "fc2.weight"),
    "unknown-op": (_m_unknown_op, "FancyRelu"),
    "empty-op-type": (_m_empty_op, "x.onnx"),
    "lowercase-op": (_m_lowercase_op, "gemm"),
    "unknown-domain": (_m_unknown_domain, "com.example"),
    "unknown-domain-imported": (_m_unknown_domain_imported, "com.example"),
    "ml-domain": (_m_ml_domain, "ai.onnx.ml"),
    "own-domain-unknown-op": (_m_own_domain_unknown_op, "ai.acompile"),
    "huge-weight-dims": (_m_huge_weight, "fc1.weight"),
    "huge-weight-dims-2^62": (_m_huge_weight_2_62, "fc1.weight"),
    "negative-weight-dim": (_m_negative_dim, "fc1.weight"),
    "huge-input-dim": (_m_huge_input, "input"),
    "huge-value-info": (_m_huge_value_info, "'h'"),
    "nan-weight": (_m_nan_weight, "fc1"),
    "inf-weight": (_m_inf_weight, "fc1"),
    "neg-inf-weight": (_m_neg_inf_weight, "fc2"),
    "nan-bias": (_m_nan_bias, "fc2"),
    "all-nan-weight": (_m_all_nan, "fc1"),
    "weight-data-shorter-than-dims": (_m_size_mismatch, "x.onnx"),
    "weight-without-data": (_m_no_data, "x.onnx"),
    "zero-size-dims-with-data": (_m_zero_size_data, "x.onnx"),
    "ext-parent": (_ext("../secret.bin"), "leaves the model's folder"),
    "ext-parent-nested": (_ext("sub/../../secret.bin"), "leaves the model's folder"),
    "ext-absolute": (_ext(lambda d: str(d / "secret.bin")), "absolute path"),
    "ext-absolute-etc": (_ext("/etc/passwd"), "absolute path"),
    "ext-symlink-out": (_m_ext_symlink_out, "leaves the model's folder"),
    "ext-symlinked-folder-out": (_m_ext_symlinked_dir, "leaves the model's folder"),
    "ext-constant-escape": (_m_ext_constant_escape, "leaves the model's folder"),
    "ext-missing-file": (_ext("nope.bin"), "not found"),
    "ext-location-is-folder": (_ext("."), "fc1.weight"),
    "ext-no-location": (_ext(""), "without a location"),
    "ext-too-short": (_ext("w.bin", offset="1000000"), "shorter"),
    "ext-offset-not-a-number": (_ext("w.bin", offset="abc"), "offset"),
    "ext-negative-length": (_ext("w.bin", length="-5"), "length"),
    "ext-nul-in-location": (_ext("w\x00.bin"), "fc1.weight"),
    "opset-newer-than-onnx": (_opset(999), "opset 999"),
    "opset-0": (_opset(0), "x.onnx"),
    "opset-negative": (_opset(-3), "x.onnx"),
    "no-default-opset": (_m_no_default_opset, "x.onnx"),
    "ir-version-999": (_ir(999), "x.onnx"),
    "ir-version-0": (_ir(0), "x.onnx"),
}


def _mutated(name: str) -> Callable[[Path], None]:
    mutate = MUTATIONS[name][0]

    def setup(d: Path) -> None:
        m = small_mlp()
        (d / "model").mkdir(exist_ok=True)
        mutate(m, d)
        (d / "model" / "x.onnx").write_bytes(m.SerializeToString())

    return setup


def _write(rel: str, data: bytes | Callable[[Path], bytes]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data(d) if callable(data) else data)

    return setup


def _truncated(src: str, cut: Callable[[int], int], rel: str) -> Callable[[Path], None]:
    def data(d: Path) -> bytes:
        b = (d / src).read_bytes()
        return b[:cut(len(b))]

    return _write(rel, data)


def _mapped_mutation(fn: Callable[[onnx.ModelProto], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        m = onnx.load(str(d / "m.pcm.onnx"))
        fn(m)
        (d / "bad.pcm.onnx").write_bytes(m.SerializeToString())

    return setup


def _meta(key: str, value: str | None) -> Callable[[onnx.ModelProto], None]:
    def fn(m: onnx.ModelProto) -> None:
        props = {p.key: p.value for p in m.metadata_props}
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
        del m.metadata_props[:]
        helper.set_model_props(m, props)

    return fn


def _analog(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if n.domain == "ai.acompile")


def _tiles(value: str) -> Callable[[onnx.ModelProto], None]:
    def fn(m: onnx.ModelProto) -> None:
        for a in _analog(m).attribute:
            if a.name == "tiles":
                a.s = value.encode()

    return fn


def _drop_gscale(m: onnx.ModelProto) -> None:
    n = _analog(m)
    m.graph.initializer.remove(_init(m, n.input[2]))


def _shrink_w(m: onnx.ModelProto) -> None:
    n = _analog(m)
    t = _init(m, n.input[1])
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[:5].copy(), t.name))


def _target_json(m: onnx.ModelProto) -> None:
    props = {p.key: p.value for p in m.metadata_props}
    t = json.loads(props["acompile.target"])
    t["tile"]["rows"] = -3
    _meta("acompile.target", json.dumps(t))(m)


HOSTILE_MAPPED: dict[str, Callable[[onnx.ModelProto], None]] = {
    "format-99": _meta("acompile.format", "99"),
    "no-format": _meta("acompile.format", None),
    "target-not-json": _meta("acompile.target", "{"),
    "target-a-list": _meta("acompile.target", "[]"),
    "target-bad-tile-rows": _target_json,
    "mapping-not-json": _meta("acompile.mapping", "{oops"),
    "mapping-a-number": _meta("acompile.mapping", "3"),
    "tiles-not-json": _tiles("not json"),
    "tiles-out-of-range": _tiles('[{"tile": 0, "chip": 0, "row_start": 0, "row_end": 99999, "col_start": 0, '
                                 '"col_end": 4, "tile_row": 0, "tile_col": 0}]'),
    "no-g-scale": _drop_gscale,
    "weight-shape-changed": _shrink_w,
}


def _mapped_external(location: str | None) -> Callable[[Path], None]:
    """{d}/model/bad.pcm.onnx with fc1's W in external data at `location` (None: the absolute path of
    {d}/secret.bin); the bytes are there, outside the model's folder."""
    def setup(d: Path) -> None:
        m = onnx.load(str(d / "m.pcm.onnx"))
        w = _init(m, _analog(m).input[1])
        raw = numpy_helper.to_array(w).tobytes()
        (d / "secret.bin").write_bytes(raw)
        (d / "model").mkdir()
        loc = location or str(d / "secret.bin")
        if location == "link.bin":
            (d / "model" / "link.bin").symlink_to(d / "secret.bin")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in {"location": loc, "offset": "0", "length": str(len(raw))}.items():
            w.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
        (d / "model" / "bad.pcm.onnx").write_bytes(m.SerializeToString())

    return setup


def _plain_cmds(p: str) -> dict[str, list[str]]:
    """Commands reading a plain (unmapped) model at p."""
    return {"compile": [p],
            "finetune": ["finetune", p, "--data", "{d}/data.npz", "-q"],
            "train-init": ["train", "mlp", "--init", p, "--dataset", "{d}/data.npz", "--epochs", "1",
                           "--limit", "4", "--eval-limit", "4", "-o", "{d}/t.onnx"]}


def _mapped_cmds(p: str) -> dict[str, list[str]]:
    """Commands reading a mapped model at p."""
    return {"report": ["report", p],
            "eval": ["eval", p, "--data", "{d}/data.npz", "--chips", "1", "--times", "1s", "-q",
                     "--no-baseline"]}


def _wrong_protobufs() -> dict[str, Callable[[Path], bytes]]:
    def graph_only(d: Path) -> bytes:
        return small_mlp().graph.SerializeToString()

    def tensor(d: Path) -> bytes:
        return numpy_helper.from_array(np.ones((4, 4), np.float32), "t").SerializeToString()

    def node(d: Path) -> bytes:
        return helper.make_node("Relu", ["a"], ["b"]).SerializeToString()

    def gzipped(d: Path) -> bytes:
        return gzip.compress((d / "m.onnx").read_bytes(), mtime=0)

    def npz(d: Path) -> bytes:
        return (d / "data.npz").read_bytes()

    def report_json(d: Path) -> bytes:
        return (d / "m.pcm.json").read_bytes()

    def png(d: Path) -> bytes:
        return (d / "m.pcm.png").read_bytes()

    def model_no_graph(d: Path) -> bytes:
        m = small_mlp()
        m.ClearField("graph")
        return m.SerializeToString()

    def model_no_nodes(d: Path) -> bytes:
        m = small_mlp()
        del m.graph.node[:]
        return m.SerializeToString()

    return {"graph-proto": graph_only, "tensor-proto": tensor, "node-proto": node, "gzip-of-model": gzipped,
            "npz-renamed": npz, "report-json-renamed": report_json, "png-renamed": png,
            "model-without-graph": model_no_graph, "model-without-nodes": model_no_nodes}


def onnx_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases: list[Case] = []

    def add(name: str, cmd: str, args: list[str], needle: str | None, setup=None, **kw) -> None:
        cases.append(Case(_id("onnx", name, cmd), "onnx", tuple(args), needle, setup, **kw))

    x, xm = "{d}/model/x.onnx", "{d}/model/x.pcm.onnx"
    every = {**_plain_cmds(x), **_mapped_cmds(xm)}
    # random bytes (seeded); a protobuf-like first byte on some
    sizes = [1, 2, 3, 7, 16, 64, 255, 1024, 4096, 65536]
    for i, n in enumerate(sizes):
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        if i % 3 == 1:
            blob = b"\x08\x08\x12" + blob
        cmds = every if i < 3 else {"compile": every["compile"]}
        for cmd, args in cmds.items():
            target = "model/x.pcm.onnx" if cmd in ("report", "eval") else "model/x.onnx"
            add(f"random-{n}B", cmd, args, "x.", _write(target, blob))
    # truncated valid models at several cut points (plain and mapped)
    cuts: dict[str, Callable[[int], int]] = {
        "1B": lambda n: 1, "2B": lambda n: 2, "10B": lambda n: 10, "100B": lambda n: 100,
        "1000B": lambda n: 1000, "quarter": lambda n: n // 4, "third": lambda n: n // 3,
        "half": lambda n: n // 2,
        "two-thirds": lambda n: 2 * n // 3, "n-1000": lambda n: n - 1000, "n-100": lambda n: n - 100,
        "n-20": lambda n: n - 20, "n-7": lambda n: n - 7, "n-1": lambda n: n - 1,
    }
    for i, (cut_name, cut) in enumerate(cuts.items()):
        add(f"truncated-{cut_name}", "compile", [x], "x.onnx", _truncated("m.onnx", cut, "model/x.onnx"))
        if i % 3 == 0:
            for cmd in ("finetune", "train-init"):
                add(f"truncated-{cut_name}", cmd, every[cmd], "x.onnx",
                    _truncated("m.onnx", cut, "model/x.onnx"))
        if i % 2 == 0:
            for cmd in ("report", "eval"):
                add(f"truncated-mapped-{cut_name}", cmd, every[cmd], "x.pcm.onnx",
                    _truncated("m.pcm.onnx", cut, "model/x.pcm.onnx"))
    # other protobuf messages / other formats under a model's name
    for i, (kind, data) in enumerate(_wrong_protobufs().items()):
        cmds = every if i < 3 else {"compile": every["compile"], "report": every["report"]}
        for cmd, args in cmds.items():
            target = "model/x.pcm.onnx" if cmd in ("report", "eval") else "model/x.onnx"
            add(f"wrong-protobuf-{kind}", cmd, args, "x.", _write(target, data))
    # empty file, a folder, a missing file, for every command
    for cmd, args in every.items():
        target = "model/x.pcm.onnx" if cmd in ("report", "eval") else "model/x.onnx"
        add("empty-file", cmd, args, "x.", _write(target, b""))
        add("folder-not-file", cmd, args, "x.", lambda d, t=target: (d / t).mkdir(parents=True))
        add("missing-file", cmd, args, "x.", None)
    # graph-level hostility, for compile and finetune (both read and validate the graph)
    for name, (_, needle) in MUTATIONS.items():
        for cmd in ("compile", "finetune"):
            add(name, cmd, every[cmd], needle, _mutated(name))
    # zero-size weights: documented to stay digital (compile succeeds, writes only what it is told);
    # fine-tuning then has no analog layer
    zero = _write("model/x.onnx", lambda d: _zero_size_model().SerializeToString())
    out = ("{d}/out/z.pcm.onnx", "{d}/out/z.pcm.json", "{d}/out/z.pcm.md", "{d}/out/z.pcm.png", "{d}/out")
    add("zero-size-weights", "compile", [x, "-o", "{d}/out/z.pcm.onnx", "-q"], None, zero, code=0,
        outputs=out)
    add("zero-size-weights", "finetune", every["finetune"], "nothing to fine-tune", zero)
    # no analog layer where one is needed
    add("no-analog-layer", "finetune", ["finetune", "{d}/relu.onnx", "--data", "{d}/data.npz", "-q"],
        "nothing to fine-tune")
    add("no-analog-layer-all-digital", "eval", _mapped_cmds("{d}/dig.pcm.onnx")["eval"], "no analog")
    add("no-analog-layer-relu", "eval", _mapped_cmds("{d}/relu.pcm.onnx")["eval"], "no analog")
    # a mapped model where a plain one is expected, and the other way round
    for cmd, args in _plain_cmds("{d}/m.pcm.onnx").items():
        add("mapped-for-plain", cmd, args, "mapped" if cmd != "train-init" else "--init")
    for cmd, args in _mapped_cmds("{d}/m.onnx").items():
        add("plain-for-mapped", cmd, args, "compile it")
    # mapped models with broken metadata / attributes
    for name, fn in HOSTILE_MAPPED.items():
        for cmd, args in _mapped_cmds("{d}/bad.pcm.onnx").items():
            add(f"hostile-mapped-{name}", cmd, args, ("bad.pcm.onnx", "'fc1'"), _mapped_mutation(fn))
    # a mapped model whose weights live outside its folder: eval must not read them (report reads no
    # tensor data)
    for name, location in (("parent", "../secret.bin"), ("absolute", None), ("symlink", "link.bin")):
        add(f"hostile-mapped-external-{name}", "eval", _mapped_cmds("{d}/model/bad.pcm.onnx")["eval"],
            "bad.pcm.onnx", _mapped_external(location))
    return cases


def _zero_size_model() -> onnx.ModelProto:
    m = small_mlp()
    _set_array(m, "fc1.weight", lambda a: np.zeros((0, 784), np.float32))
    _set_array(m, "fc1.bias", lambda a: np.zeros(0, np.float32))
    _set_array(m, "fc2.weight", lambda a: np.zeros((10, 0), np.float32))
    return m


# ---- TOML targets, generated from the schema --------------------------------------------------------------
_DATE = object()  # a TOML date literal (a type no key takes)
#: candidate values; for each key the ones its check refuses are kept
POOL: list[object] = [-3, 0, 1, 17, -1.0, 0.0, 1e300, math.nan, math.inf, -math.inf, "abc", "", True,
                      [], ["Conv", "Attention"], {"x": 1}, _DATE]


def toml_value(v: object) -> str:
    if v is _DATE:
        return "1979-05-27"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def _kind(v: object) -> str:
    if v is _DATE:
        return "date"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _bad_values(check: Callable[[object], str | None], default: object) -> tuple[list, list]:
    """(wrong types, out-of-range values of the default's type) that `check` refuses: the first wrong
    type of the pool and a TOML date (a type no key takes), then the refused values of the right type."""
    refused = [v for v in POOL if v is not _DATE and check(v) is not None]
    wrong = [v for v in refused if _kind(v) != _kind(default)][:1] + [_DATE]
    out_of_range = [v for v in refused if _kind(v) == _kind(default)]
    return wrong, out_of_range


def _toml_file(text: str | bytes, name: str = "t.toml") -> Callable[[Path], None]:
    return _write(name, text.encode() if isinstance(text, str) else text)


def toml_cases() -> list[Case]:
    from compiler.targets import SCHEMA, builtin_target
    from runtime.physics.devices import device_class, device_names

    pcm = builtin_target("pcm")
    commands = {"compile": ["{d}/m.onnx", "--target", "{d}/t.toml"],
                "targets": ["targets", "{d}/t.toml"],
                "finetune": ["finetune", "{d}/m.onnx", "--target", "{d}/t.toml", "--data", "{d}/data.npz"]}
    cmd_names = list(commands)
    cases: list[Case] = []

    def add(name: str, text: str | bytes, needle: str | None, args: list[str] | None = None) -> None:
        cmd = cmd_names[len(cases) % len(cmd_names)]
        cases.append(Case(_id("toml", name, cmd), "toml", tuple(args or commands[cmd]), needle,
                          _toml_file(text)))

    # every key of every section: wrong types and out-of-range values
    for section, keys in SCHEMA.items():
        for key, check in keys.items():
            default = pcm[key] if section == "" else pcm[section][key]
            wrong, out_of_range = _bad_values(check, default)
            where = key if section == "" else f"[{section}].{key}"
            head = "" if section == "" else f"[{section}]\n"
            for kind, values in (("type", wrong[:2]), ("range", out_of_range[:3])):
                for v in values:
                    add(f"{where}-{kind}-{toml_value(v)}", f"{head}{key} = {toml_value(v)}\n", where)
    for model in device_names():
        cls = device_class(model)
        defaults = cls.resolve({})
        for key, spec in cls.keys().items():
            wrong, out_of_range = _bad_values(spec.check, defaults[key])
            for kind, values in (("type", wrong[:2]), ("range", out_of_range[:2])):
                for v in values:
                    add(f"device-{model}-{key}-{kind}-{toml_value(v)}",
                        f'[device]\nmodel = "{model}"\n{key} = {toml_value(v)}\n', f"[device].{key}")
        add(f"device-{model}-unknown-key", f'[device]\nmodel = "{model}"\nbogus_key = 1.0\n', "bogus_key")
    # cross-key checks the per-key checks cannot see
    add("device-g_min-above-g_max", "[device]\ng_min = 30.0\n", "g_min")
    add("device-ideal-with-drift", '[device]\nmodel = "ideal"\ndrift = true\n', "drift")
    add("device-hermes-g_max-above-fit", 'base = "hermes"\n[device]\nnum_devices = 1\ng_max = 20.0\n',
        "g_max")
    add("device-model-unknown", '[device]\nmodel = "flash"\n', "[device].model")
    add("cost-shares-not-summing-to-1", "[cost]\nshare_adc = 0.6\n", "must sum to 1")
    add("cost-shares-summing-below-1", "[cost]\nshare_array = 0.0\n", "share_array")
    add("device-model-a-number", "[device]\nmodel = 3\n", "[device].model")
    add("device-model-a-list", '[device]\nmodel = ["pcm"]\n', "[device].model")
    # unknown keys in every section, sections that are not tables, unknown sections
    for section in SCHEMA:
        if section == "":
            add("unknown-top-level-key", "colour = 3\n", "colour")
        elif section != "device":
            add(f"unknown-key-[{section}]", f"[{section}]\nbogus_key = 1\n", "bogus_key")
        if section:
            add(f"[{section}]-not-a-table", f"{section} = 3\n", f"[{section}]")
    add("unknown-section", "[extra]\nkey = 1\n", "extra")
    add("array-of-tables", "[[tile]]\nrows = 3\n", "[tile]")
    # bad bases
    for v in ("nope", "PCM", "pcm.toml", "", 3, True, ["pcm"], {"x": 1}):
        add(f"base-{toml_value(v)}", f"base = {toml_value(v)}\n", "base")
    # invalid TOML
    syntax = {
        "unclosed-table": "[tile\nrows = 3\n", "missing-value": "[tile]\nrows =\n", "no-equals": "rows 3\n",
        "duplicate-key": "[tile]\nrows = 3\nrows = 4\n",
        "duplicate-table": "[tile]\nrows = 3\n[tile]\ncols = 3\n",
        "unterminated-string": 'name = "abc\n', "two-values": "name = 'a' 'b'\n",
        "unterminated-array": '[mapping]\nanalog_ops = ["Conv"\n', "bare-key-value": "= 3\n",
        "bad-number": "[tile]\nrows = 0x\n", "empty-table-name": "[ ]\n", "tab-in-key": "ro\tws = 3\n",
        "nul-byte": "name = 'a'\x00\n",
    }
    for name, text in syntax.items():
        add(f"syntax-{name}", text, "not valid TOML")
    add("syntax-invalid-utf8", b"name = '\xff\xfe'\n", "not valid TOML")
    add("syntax-binary", bytes(range(256)), "not valid TOML")
    # the --target value itself
    for name, spec, needle in (("missing-file", "{d}/missing.toml", "missing.toml"),
                               ("folder", "{d}/tdir.toml", "tdir.toml"),
                               ("unknown-name", "nosuch", "nosuch"), ("empty", "", "unknown target"),
                               ("npz-file", "{d}/data.npz", "data.npz")):
        for cmd, args in commands.items():
            args = [spec if a == "{d}/t.toml" else a for a in args]
            cases.append(Case(_id("toml", "target", name, cmd), "toml", tuple(args), needle,
                              (lambda d: (d / "tdir.toml").mkdir()) if name == "folder" else None))
    return cases


# ---- option values, generated from the click commands ----------------------------------------------------
def commands() -> dict[str, click.Command]:
    from compiler.cli import COMMANDS, cli

    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in COMMANDS}


#: how each command is called with otherwise valid arguments (the bad option goes last)
OPTION_BASE: dict[str, list[str]] = {
    "compile": ["{d}/m.onnx"],
    "report": ["report", "{d}/m.pcm.onnx"],
    "targets": ["targets"],
    "eval": ["eval", "{d}/m.pcm.onnx", "--data", "{d}/data.npz"],
    "train": ["train", "mlp", "--dataset", "{d}/data.npz"],
    "finetune": ["finetune", "{d}/m.onnx", "--data", "{d}/data.npz"],
    "sweep": ["sweep", "mlp", "--param", "states=10", "--dataset", "{d}/data.npz"],
    "explore": ["explore", "{d}/m.onnx", "--set", "adc_bits=4,8", "--out", "{d}/x", "--data", "{d}/data.npz"],
}
CANDIDATES = ["-1", "0", "nan", "inf", "-inf", "abc", "1e999", "99999999999999999999999", "", "1.5"]
LIST_CANDIDATES = [",", "1,abc", "1,nan", "1,,-1", "0,0"]
TIME_UNITS = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


def _as_int(s: str) -> int | None:
    try:
        return int(s.strip())
    except ValueError:
        return None


def _as_float(s: str) -> float | None:
    try:
        v = float(s.strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _ints(lo: int, hi: int | None = None) -> Callable[[str], bool]:
    return lambda s: (v := _as_int(s)) is not None and v >= lo and (hi is None or v <= hi)


def _floats(ok: Callable[[float], bool]) -> Callable[[str], bool]:
    return lambda s: (v := _as_float(s)) is not None and ok(v)


def _list(item: Callable[[str], bool]) -> Callable[[str], bool]:
    def valid(s: str) -> bool:
        parts = [p for p in s.split(",") if p.strip()]
        return bool(parts) and all(item(p) for p in parts)

    return valid


def _time(positive: bool) -> Callable[[str], bool]:
    def valid(p: str) -> bool:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(s|min|m|h|d|w|y)?", p.strip().lower())
        if not m:
            return False
        v = float(m.group(1)) * TIME_UNITS[m.group(2) or "s"]
        return math.isfinite(v) and (v > 0 if positive else v >= 0)

    return valid


def oracle() -> dict[int, Callable[[str], bool]]:
    """id(option type) -> is this text valid? Written from the bounds of CONTRACTS §2, independently of
    runtime/options.py (which the cross-check test below compares against it)."""
    from runtime import options as opt

    return {
        id(opt.POS_INT): _ints(1), id(opt.NONNEG_INT): _ints(0),
        id(opt.BITS): lambda s: (v := _as_int(s)) is not None and (v == 0 or 2 <= v <= 16),
        id(opt.CHIPS): _ints(1, 10_000), id(opt.THREADS): _ints(1, 1024), id(opt.SEED): _ints(0, 2**63 - 1),
        id(opt.POS_FLOAT): _floats(lambda v: v > 0), id(opt.NONNEG_FLOAT): _floats(lambda v: v >= 0),
        id(opt.FRACTION): _floats(lambda v: 0 <= v < 1), id(opt.UNIT): _floats(lambda v: 0 <= v <= 1),
        id(opt.TIMES): _list(_time(False)), id(opt.POS_TIMES): _list(_time(True)),
        id(opt.FLOATS): _list(lambda p: _as_float(p) is not None),
        id(opt.POS_FLOATS): _list(lambda p: (v := _as_float(p)) is not None and v > 0),
        id(opt.BOUND): lambda s: (s.strip().lower() == "calibrated"
                                  or ((v := _as_float(s)) is not None and v > 0)),
        id(opt.COMPENSATION): _list(lambda p: p.strip().lower() in opt.COMPENSATIONS),
        id(opt.DUPLICATE): lambda s: (s.strip().lower() == "auto"
                                      or ((v := _as_int(s)) is not None and 1 <= v <= 10_000)),
    }


def _tile_valid(s: str) -> bool:
    parts = s.lower().split("x")
    return len(parts) == 2 and all((v := _as_int(p)) is not None and v > 0 for p in parts)


def _validity(param: click.Parameter) -> Callable[[str], bool] | None:
    """The oracle of one option, or None for free text / paths / flags (not generated)."""
    ptype = param.type
    known = oracle().get(id(ptype))
    if known is not None:
        return known
    if isinstance(ptype, click.Choice):
        return lambda s: s in ptype.choices
    if "--tile" in param.opts:
        return _tile_valid
    if isinstance(ptype, click.ParamType) and type(ptype).__module__ == "runtime.options":
        raise AssertionError(f"option {param.opts} has a checked type the oracle does not know: add it")
    return None


def _typed_options(cmd: click.Command) -> list[tuple[click.Option, Callable[[str], bool]]]:
    out = []
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.is_flag and not p.multiple:
            valid = _validity(p)
            if valid is not None:
                out.append((p, valid))
    return out


def _flag(p: click.Parameter) -> str:
    return next((o for o in p.opts if o.startswith("--")), p.opts[0])


def _values(p: click.Option, valid: Callable[[str], bool]) -> list[str]:
    cands = list(CANDIDATES)
    if isinstance(p.type, click.Choice):
        first = str(p.type.choices[0])
        cands += [first.upper() if first.upper() != first else first.lower(), first + " "]
    elif type(p.type).__name__ == "Parsed" and "--tile" not in p.opts:
        cands += LIST_CANDIDATES
    return [v for v in dict.fromkeys(cands) if not valid(v)]


def option_cases() -> list[Case]:
    cases: list[Case] = []
    cmds = commands()
    for name, cmd in cmds.items():
        for p, valid in _typed_options(cmd):
            flag = _flag(p)
            for v in _values(p, valid):
                cases.append(Case(_id("option", name, flag, repr(v)), "option",
                                  (*OPTION_BASE[name], flag, v), None, flag=flag))
    # compile --eval parses eval's options before it compiles: nothing is written for a bad one
    for p, valid in _typed_options(cmds["eval"]):
        flag = _flag(p)
        for v in _values(p, valid)[:2]:
            cases.append(Case(_id("option", "compile--eval", flag, repr(v)), "option",
                              ("{d}/m.onnx", "--eval", "--data", "{d}/data.npz", flag, v), None, flag=flag))
    return cases


# ---- output paths ----------------------------------------------------------------------------------------
#: command -> (valid arguments, {output flag: a suffix it takes}, an input file of that call)
OUTPUTS: dict[str, tuple[list[str], dict[str, str], str]] = {
    "compile": (["{d}/m.onnx"], {"-o": ".onnx"}, "{d}/m.onnx"),
    "compile --eval": (["{d}/m.onnx", "--eval", "--data", "{d}/data.npz"],
                       {"--json": ".json", "--csv": ".csv", "--plot": ".png"}, "{d}/data.npz"),
    "report": (["report", "{d}/m.pcm.onnx", "--format", "md"], {"-o": ".md"}, "{d}/m.pcm.onnx"),
    "eval": (["eval", "{d}/m.pcm.onnx", "--data", "{d}/data.npz"],
             {"--json": ".json", "--csv": ".csv", "--plot": ".png"}, "{d}/m.pcm.onnx"),
    "train": (["train", "mlp", "--data", "{d}/data.npz"],
              {"-o": ".onnx", "--json": ".json", "--checkpoint": ".npz"}, "{d}/data.npz"),
    "finetune": (["finetune", "{d}/m.onnx", "--data", "{d}/data.npz"],
                 {"-o": ".onnx", "--checkpoint": ".npz", "--json": ".json"}, "{d}/m.onnx"),
    "sweep": (["sweep", "mlp", "--param", "states=10", "--dataset", "{d}/data.npz"],
              {"--json": ".json", "--plot": ".png"}, "{d}/data.npz"),
}
#: file options / arguments that are inputs (every other path option must be in OUTPUTS)
INPUT_PATHS = {"compile": {"model"}, "report": {"mapped"}, "eval": {"mapped"},
               "train": {"data_root", "resume", "init"}, "finetune": {"model"}, "explore": {"model"}}
#: folder options whose files the command names itself (explore --out DIR: results.jsonl, summary.*)
OUTPUT_FOLDERS = {"explore": {"out_dir"}}
#: output flags without a suffix rule
ANY_SUFFIX = {"--checkpoint"}
UNWRITABLE = [Path("/sys"), Path("/proc")]  # not writable even for root


def _unwritable(folder: Path) -> bool:
    from runtime.outputs import _writable

    return folder.is_dir() and not _writable(folder)


def _chmod_folder(d: Path) -> None:
    (d / "locked").mkdir()
    (d / "locked").chmod(0o500)


def _link(kind: str, src: str, dst: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        s, t = Path(src.format(d=d)), Path(dst.format(d=d))
        if kind == "hard":
            os.link(s, t)
        else:
            t.symlink_to(s)

    return setup


def _read_only(rel: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / rel).write_text("old\n")
        (d / rel).chmod(0o444)

    return setup


def output_cases() -> list[Case]:
    cases: list[Case] = []
    for cmd, (base, flags, source) in OUTPUTS.items():
        names = list(flags)
        for i, (flag, good) in enumerate(flags.items()):
            def add(name: str, value: str, needle: str | tuple[str, ...] | None = None, setup=None, extra=(),
                    marks=(), _flag=flag, _cmd=cmd, _base=base) -> None:
                cases.append(Case(_id("output", _cmd, _flag, name), "output",
                                  (*_base, *extra, _flag, value), needle, setup, marks=marks, flag=_flag))

            add("the-input", source, "overwrite the input")
            add("hard-link-to-the-input", "{d}/link" + good, "overwrite the input",
                _link("hard", source, "{d}/link" + good))
            add("symlink-to-the-input", "{d}/link" + good, "overwrite the input",
                _link("sym", source, "{d}/link" + good))
            if len(names) > 1:
                # the flag checked first (dict order = check_outputs' order) gets its own suffix, so the
                # second one is refused for naming the same file, not for its suffix
                j = (i + 1) % len(names)
                other, first = names[j], names[min(i, j)]
                same = "{d}/same" + flags[first]
                add(f"same-as-{other}", same, "same file", extra=(other, same))
            elif cmd == "compile":  # -o and eval's --csv
                add("same-as---csv", "{d}/same.onnx", "same file",
                    extra=("--eval", "--data", "{d}/data.npz", "--csv", "{d}/same.onnx"))
            if cmd == "compile --eval" and good in (".json", ".png"):  # on one of -o's own reports
                add("on--o's-report", "{d}/o" + good, "same file", extra=("-o", "{d}/o.onnx"))
            folder = ("folder", "directory")
            add("a-folder", "{d}/sub", folder, lambda d: (d / "sub").mkdir())
            add("the-working-folder", ".", folder)
            add("a-trailing-slash-folder", "{d}/sub/", folder, lambda d: (d / "sub").mkdir())
            for root in UNWRITABLE:
                add(f"unwritable-{root.name}", f"{root}/acompile-corpus/x{good}", "not writable",
                    marks=(pytest.mark.skipif(not _unwritable(root), reason=f"{root} is writable here"),))
            add("chmod-0500-folder", "{d}/locked/x" + good, "not writable", _chmod_folder,
                marks=(pytest.mark.skipif(IS_ROOT, reason="root writes into a 0o500 folder"),))
            add("parent-is-a-file", "{d}/afile/x" + good, "not a folder", _write("afile", b"a file\n"))
            add("read-only-file", "{d}/ro" + good, "read-only", _read_only("ro" + good))
            add("special-file", "/dev/null", None,
                marks=(pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null"),))
            add("stdout-dash", "-", "give a file name")
            if flag not in ANY_SUFFIX:
                add("no-suffix", "{d}/out", "must end in")
                add("wrong-suffix", "{d}/out" + (".txt" if good != ".txt" else ".bin"), "must end in")
                add("suffix-of-another-output", "{d}/out" + (".json" if good != ".json" else ".csv"),
                    "must end in")
    return cases


# ---- the corpus ------------------------------------------------------------------------------------------
def build_corpus() -> list[Case]:
    corpus = [*onnx_cases(), *toml_cases(), *option_cases(), *output_cases()]
    ids = Counter(c.id for c in corpus)
    dup = [i for i, n in ids.items() if n > 1]
    assert not dup, f"duplicate case ids: {dup[:5]}"
    return corpus


CORPUS = build_corpus()


# ---- running a case ---------------------------------------------------------------------------------------
def _make_base(d: Path) -> None:
    """m.onnx + its compiled set m.pcm.{onnx,json,md,png}, an all-digital mapped model, a model without
    weight layers and its mapped form, and 20 MNIST images."""
    from compiler.pipeline import compile_model
    from compiler.targets import load_target

    onnx.save(small_mlp(), str(d / "m.onnx"))
    onnx.save(relu_only(), str(d / "relu.onnx"))
    pcm = load_target("pcm")
    compile_model(d / "m.onnx", pcm, d / "m.pcm.onnx", [], False, progress=False)
    compile_model(d / "m.onnx", pcm, d / "dig.pcm.onnx", ["fc1", "fc2"], False, progress=False)
    compile_model(d / "relu.onnx", pcm, d / "relu.pcm.onnx", [], False, progress=False)
    with np.load(MNIST_1K) as z:
        np.savez(d / "data.npz", x=z["x"][:20], y=z["y"][:20])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus-base")
    _make_base(d)
    return d


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below folder (hidden ones too), 'dir' for folders,
    'link -> target' for symbolic links."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case; a BaseException, so that no `except Exception` swallows it."""


@contextlib.contextmanager
def deadline(seconds: float):
    def fire(signum, frame):
        raise CaseTimeout(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(3 * seconds, exit=True)  # stuck in C code: end the run, loudly
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _Acompile:
    """`acompile` as CliRunner sees a command: its main() is compiler.cli.main (the one-line errors)."""

    name = "acompile"

    def main(self, args=(), prog_name=None, **extra):
        from compiler.cli import main

        return main(list(args))


def _runner() -> CliRunner:
    params = inspect.signature(CliRunner.__init__).parameters
    if "capture" in params and sys.platform != "win32":
        return CliRunner(capture="fd")  # click >= 8.4: C-level writes to fd 1 / 2 are caught too
    if "mix_stderr" in params:
        return CliRunner(mix_stderr=False)  # click < 8.2
    return CliRunner()


def _show_warnings_as_python_does() -> None:
    """Inside catch_warnings: the interpreter's default filters, printed to (the captured) stderr, as a
    user's `acompile` process would show them."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show


def run_acompile(args: list[str]) -> tuple[int, str, str, str | None]:
    """(exit code, stdout, stderr, formatted traceback of an uncaught exception or None)."""
    with warnings.catch_warnings():
        _show_warnings_as_python_does()
        with deadline(CASE_TIMEOUT_S):
            result = _runner().invoke(_Acompile(), args, prog_name="acompile", catch_exceptions=True)
    exc = result.exception
    tb = None
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, result.stdout, result.stderr, tb


def prepare(case: Case, base: Path, folder: Path) -> list[str]:
    for p in base.iterdir():
        shutil.copy(p, folder / p.name)
    if case.setup is not None:
        case.setup(folder)
    return [a.format(d=folder) for a in case.args]


def check_result(case: Case, args: list[str], code: int, err: str, tb: str | None) -> None:
    shown = f"acompile {' '.join(args)}\nstderr:\n{err}"
    assert tb is None, f"uncaught exception\n{shown}\n{tb}"
    assert "Traceback" not in err, shown
    assert code == case.code, f"exit code {code}, expected {case.code}\n{shown}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if case.code == 2:
        assert len(lines) == 1, f"expected one stderr line\n{shown}"
        assert lines[0].startswith("acompile: error: "), shown
        needles = (case.needle,) if isinstance(case.needle, str) else case.needle or ()
        assert not needles or any(n in lines[0] for n in needles), \
            f"the error does not mention {' or '.join(map(repr, needles))}\n{shown}"
        if case.flag is not None:
            assert case.flag in lines[0], f"the error does not name {case.flag}\n{shown}"
    else:
        assert not any(ln.startswith("acompile: error") for ln in lines), shown


def check_files(case: Case, folder: Path, before: dict[str, str], after: dict[str, str]) -> None:
    allowed = {str(Path(o.format(d=folder)).relative_to(folder)) for o in case.outputs}
    changed = sorted(k for k in before.keys() | after.keys()
                     if before.get(k) != after.get(k) and k not in allowed)
    assert not changed, f"files changed that the case did not name as outputs: {changed}"
    for k in allowed:
        if case.code == 0:
            assert k in after, f"named output {k} missing"


@pytest.fixture()
def quiet_env(monkeypatch):
    for var in ("ACOMPILE_DATA", "ACOMPILE_TEST_WRITE_PAUSE", "ACOMPILE_PROGRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _param(case: Case):
    return pytest.param(case, id=case.id, marks=case.marks)


@pytest.mark.parametrize("case", [_param(c) for c in CORPUS])
def test_bad_input(case: Case, base: Path, tmp_path: Path, monkeypatch, quiet_env) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    args = prepare(case, base, folder)
    monkeypatch.chdir(folder)  # anything written relative to the working folder is seen too
    before = snapshot(folder)
    try:
        code, _, err, tb = run_acompile(args)
    except CaseTimeout as exc:
        pytest.fail(f"{exc}: acompile {' '.join(args)}")
    finally:
        for p in folder.rglob("*"):  # 0o500 folders: let pytest clean up
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
    after = snapshot(folder)
    check_result(case, args, code, err, tb)
    check_files(case, folder, before, after)


# ---- the corpus itself -----------------------------------------------------------------------------------
def test_corpus_size_and_categories() -> None:
    counts = Counter(c.category for c in CORPUS)
    print(f"\nbad-input corpus: {len(CORPUS)} cases: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert len(CORPUS) >= MIN_CASES
    assert min(counts["onnx"], counts["toml"], counts["output"]) >= 100 and counts["option"] >= 200

    def key(corpus: list[Case]) -> list[tuple]:
        return [(c.id, c.args, c.needle, c.code, c.outputs) for c in corpus]

    assert key(build_corpus()) == key(CORPUS)  # deterministic (seeded): the same corpus every time


def test_toml_cases_cover_every_key() -> None:
    from compiler.targets import SCHEMA
    from runtime.physics.devices import device_class, device_names

    toml = [c for c in CORPUS if c.category == "toml"]
    for section, keys in SCHEMA.items():
        for key in keys:
            where = key if section == "" else f"[{section}].{key}"
            assert any(c.id.startswith(_id("toml", where, "type")) for c in toml), where
    for model in device_names():
        for key in device_class(model).keys():
            assert any(c.id.startswith(_id("toml", "device", model, key, "type")) for c in toml), (model, key)


def test_option_oracle_agrees_with_the_option_types() -> None:
    """The oracle (CONTRACTS §2 bounds) and runtime.options agree on every generated value, valid or
    not, so the option cases test what the contract says."""
    disagree = []
    for name, cmd in commands().items():
        ctx = click.Context(cmd, info_name=name)
        for p, valid in _typed_options(cmd):
            for v in dict.fromkeys(CANDIDATES + LIST_CANDIDATES + ["1", "2", "0.5", "1s,1d", "calibrated"]):
                try:
                    p.type.convert(v, p, ctx)
                    accepted = True
                except (AcompileError, click.BadParameter):
                    accepted = False
                if accepted != valid(v):
                    disagree.append((name, _flag(p), v, "accepted" if accepted else "refused"))
    assert not disagree, disagree


def test_every_path_option_is_classified() -> None:
    """New file options must be added to OUTPUTS or INPUT_PATHS, so the output cases cover them."""
    flags_by_cmd: dict[str, set[str]] = {}
    for cmd, (_, flags, _) in OUTPUTS.items():
        flags_by_cmd.setdefault(cmd.split()[0], set()).update(flags)
    for name, cmd in commands().items():
        for p in cmd.params:
            if isinstance(p.type, click.Path):
                known = (p.name in INPUT_PATHS.get(name, set()) | OUTPUT_FOLDERS.get(name, set())
                         or set(p.opts) & flags_by_cmd.get(name, set()))
                if name == "compile" and p.name in ("json_path", "csv_path", "plot_path"):
                    known = True
                assert known, f"{name} {p.opts}: an input or an output? add it to INPUT_PATHS or OUTPUTS"
    eval_flags = {o for p in commands()["eval"].params if isinstance(p.type, click.Path) for o in p.opts}
    assert set(OUTPUTS["eval"][1]) <= eval_flags and set(OUTPUTS["compile --eval"][1]) <= eval_flags


# ---- a sample in real processes -------------------------------------------------------------------------
def _sample() -> list[Case]:
    """One case per category and kind that runs before torch loads (a few seconds per process)."""
    picks = ["onnx-random-7B-compile", "onnx-truncated-half-compile", "onnx-ext-parent-compile",
             "toml-syntax-unclosed-table-", "option-eval---chips-'0'", "output-eval---json-the-input"]
    out = []
    for p in picks:
        out.append(next(c for c in CORPUS if c.id.startswith(_id(p)) and not c.marks))
    return out


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in _sample()])
def test_bad_input_in_a_real_process(case: Case, base: Path, tmp_path: Path) -> None:
    """What a terminal shows: Python warnings, C-level messages (protobuf, onnx) and all."""
    folder = tmp_path / "w"
    folder.mkdir()
    args = prepare(case, base, folder)
    before = snapshot(folder)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ACOMPILE_DATA", "ACOMPILE_TEST_WRITE_PAUSE", "ACOMPILE_PROGRESS")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    check_result(case, args, proc.returncode, proc.stderr, None)
    check_files(case, folder, before, snapshot(folder))
