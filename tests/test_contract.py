"""runtime.contract, the mapped-artifact contract (CONTRACTS §3) as code: writer -> reader round trips,
every bundled model compiled for every built-in target passes check_mapped and onnx.checker, and
check_mapped rejects broken artifacts with an error naming the node (or the metadata key)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from compiler.pipeline import map_model
from compiler.targets import BUILTIN, load_target
from models import MODELS_DIR
from runtime import contract
from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.evaluate import Emulator

BUNDLED = sorted(p.name for p in Path(MODELS_DIR).glob("*.onnx"))


def test_on_disk_names():
    """The literals files carry (CONTRACTS §3); changing one is a format change."""
    assert (contract.DOMAIN, contract.DOMAIN_VERSION, contract.FORMAT_VERSION) == ("ai.acompile", 1, "1")
    assert contract.ANALOG_OPS == ("AnalogConv", "AnalogMatMul", "AnalogConvTranspose", "AnalogLSTM",
                                  "AnalogGRU", "AnalogRNN")
    assert contract.INPUTS == ("X", "W", "G_SCALE", "B")
    assert contract.MAPPED_METADATA == ("acompile.format", "acompile.target", "acompile.mapping")
    assert set(contract.METADATA_KEYS) == {
        "acompile.format", "acompile.target", "acompile.mapping", "acompile.preprocessing", "acompile.recipe",
        "acompile.finetune_target", "acompile.parent_sha256", "acompile.source"}
    assert contract.TILE_KEYS == ("tile", "chip", "row_start", "row_end", "col_start", "col_end", "tile_row",
                                  "tile_col")
    A = onnx.AttributeProto
    common = {"layer": A.STRING, "orig_op": A.STRING, "tiles": A.STRING, "shares": A.STRING}
    assert {k: s.type for k, s in contract.ATTRS["AnalogConv"].items()} == {
        "kernel_shape": A.INTS, "strides": A.INTS, "pads": A.INTS, "dilations": A.INTS, "group": A.INT,
        "replicas": A.INT, **common}
    assert {k: s.type for k, s in contract.ATTRS["AnalogMatMul"].items()} == {
        "alpha": A.FLOAT, "beta": A.FLOAT, "bias_rows": A.INT, "replicas": A.INT, **common}
    assert {k: s.type for k, s in contract.ATTRS["AnalogConvTranspose"].items()} == {
        "kernel_shape": A.INTS, "strides": A.INTS, "pads": A.INTS, "dilations": A.INTS,
        "output_padding": A.INTS, "group": A.INT, "replicas": A.INT, **common}
    recurrent = {"hidden_size": A.INT, "input_size": A.INT, "direction": A.STRING, "layout": A.INT,
                 "activations": A.STRINGS, "activation_alpha": A.FLOATS, "activation_beta": A.FLOATS,
                 "clip": A.FLOAT, "bias_rows": A.INT, **common}
    assert {k: s.type for k, s in contract.ATTRS["AnalogLSTM"].items()} == {**recurrent,
                                                                            "input_forget": A.INT}
    assert {k: s.type for k, s in contract.ATTRS["AnalogGRU"].items()} == {**recurrent,
                                                                           "linear_before_reset": A.INT}
    assert {k: s.type for k, s in contract.ATTRS["AnalogRNN"].items()} == recurrent


# --- writer -> reader ---------------------------------------------------------------------------------


def _blocks(rows: int, cols: int, R: int, C: int) -> list[contract.TileBlock]:
    return [contract.TileBlock(tile=i, chip=0, row_start=r, row_end=min(r + R, rows), col_start=c,
                               col_end=min(c + C, cols))
            for i, (r, c) in enumerate((r, c) for r in range(0, rows, R) for c in range(0, cols, C))]


def test_node_round_trip_conv():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3 * 3 * 3, 5)).astype(np.float32)  # C_in 3, 3x3 kernel, C_out 5
    gs = np.full(5, 25.0 / np.abs(W).max(), np.float32)
    tiles = _blocks(27, 5, 10, 4)
    attrs = contract.conv_attrs([3, 3], [2, 1], [1, 0, 1, 0], [1, 1])
    node, inits = contract.make_analog_node(contract.ANALOG_CONV, "conv1", "x", W, gs, ["y"], attrs, tiles,
                                            bias="conv1.bias")
    b = rng.standard_normal(5).astype(np.float32)
    table = {t.name: t for t in inits} | {"conv1.bias": numpy_helper.from_array(b, "conv1.bias")}
    a = contract.read_analog_node(node, table)
    assert (a.name, a.op_type, a.layer, a.orig_op, a.x, a.outputs) == ("conv1", "AnalogConv", "conv1", "Conv",
                                                                       "x", ["y"])
    assert (a.w_name, a.g_scale_name, a.bias_name) == ("conv1.W", "conv1.G_SCALE", "conv1.bias")
    np.testing.assert_array_equal(a.W, W)
    np.testing.assert_array_equal(a.g_scale, gs)
    np.testing.assert_array_equal(a.bias, b)
    assert (a.kernel_shape, a.strides, a.pads, a.dilations) == ([3, 3], [2, 1], [1, 0, 1, 0], [1, 1])
    assert a.group == 1
    assert a.tiles == tiles and a.w_shape == (27, 5)
    np.testing.assert_array_equal(a.conv_weight(), W.T.reshape(5, 3, 3, 3))
    # the attribute as it is on disk: compact JSON with exactly the schema's keys
    on_disk = json.loads(helper.get_attribute_value(next(x for x in node.attribute if x.name == "tiles")))
    assert on_disk == [t.to_json() for t in tiles] and set(on_disk[0]) == set(contract.TILE_KEYS)
    assert contract.parse_tiles(contract.tiles_json(tiles)) == tiles


def test_node_round_trip_matmul_defaults():
    W = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    node, inits = contract.make_analog_node(contract.ANALOG_MATMUL, "fc", "h", W, np.ones(3), ["out"],
                                            contract.matmul_attrs(2, 0.5, "Gemm"), _blocks(4, 3, 256, 256),
                                            layer="orig_fc")
    types = {x.name: x.type for x in node.attribute}
    assert types["alpha"] == types["beta"] == onnx.AttributeProto.FLOAT  # ints written as the spec's type
    a = contract.read_analog_node(node, {t.name: t for t in inits})
    assert (a.alpha, a.beta, a.orig_op, a.layer) == (2.0, 0.5, "Gemm", "orig_fc")
    assert a.bias_name is None and a.bias is None
    np.testing.assert_array_equal(a.W, W)
    assert a.g_scale.dtype == np.float32 and a.g_scale.tolist() == [1.0, 1.0, 1.0]
    # defaults: a node without the optional attributes reads as the spec says
    bare = copy.deepcopy(node)
    keep = [x for x in bare.attribute if x.name not in ("alpha", "beta")]
    del bare.attribute[:]
    bare.attribute.extend(keep)
    b = contract.read_analog_node(bare, {t.name: t for t in inits})
    assert (b.alpha, b.beta) == (1.0, 1.0)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _input(path: Path, n: int = 8) -> np.ndarray:
    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    return np.random.default_rng(1).standard_normal((n, *dims)).astype(np.float32)


@pytest.mark.parametrize("name", ["mlp-mnist.onnx", "lenet5-mnist.onnx"])
def test_compile_check_read_emulate(name):
    """compile -> check_mapped -> read every analog node (its W is the original weight) -> the emulator
    on target `ideal` (programmed, calibrated) equals onnxruntime on the original model."""
    path = Path(MODELS_DIR) / name
    target = load_target("ideal")
    mapped, _ = map_model(path, target)
    contract.check_mapped(mapped)
    original = onnx.load(str(path))
    orig_nodes = {n.name: n for n in original.graph.node}
    orig_w = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    nodes = contract.analog_nodes(mapped)
    assert nodes
    for a in nodes:
        src = orig_nodes[a.layer]
        assert a.orig_op == src.op_type
        w = orig_w[src.input[1]]
        if a.is_conv:
            np.testing.assert_array_equal(a.conv_weight(), w)
        else:
            trans_b = any(x.name == "transB" and x.i for x in src.attribute)
            np.testing.assert_array_equal(a.W, w.T if trans_b else w)
        np.testing.assert_allclose(a.g_scale, 25.0 / np.abs(a.W).max(), rtol=1e-6)
    meta = contract.read_mapped_metadata(mapped)
    assert meta.target == target and meta.mapping["schema"] == "acompile.report/1"
    assert contract.META_PREPROCESSING in meta.entries  # the input model's metadata is kept

    x = _input(path)
    emu = Emulator(mapped, AnalogSettings.from_target(target))
    emu.program(0, 0, x, len(x))
    y = emu.executor(torch.from_numpy(x)).numpy()
    ref = _ort(path, x)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


# --- every bundled model for every built-in target ----------------------------------------------------


@pytest.mark.parametrize("target", BUILTIN)
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_models_follow_the_schema(name, target):
    mapped, report = map_model(Path(MODELS_DIR) / name, load_target(target))
    nodes = contract.check_mapped(mapped)
    onnx.checker.check_model(mapped)
    assert len(nodes) == report["totals"]["analog_layers"] > 0
    assert sum(len(a.tiles) for a in nodes) == sum(ly["blocks"] for ly in report["layers"])
    assert mapped.producer_name == contract.PRODUCER


def test_packed_model_follows_the_schema():
    path = Path(MODELS_DIR) / "resnet32-cifar10-plain.onnx"
    mapped, report = map_model(path, load_target("pcm"), pack=True)
    nodes = contract.check_mapped(mapped)
    assert report["totals"]["tiles_saved_by_packing"] > 0
    assert len({b.tile for a in nodes for b in a.tiles}) < sum(len(a.tiles) for a in nodes)  # shared tiles


# --- check_mapped rejects broken artifacts ------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_pcm() -> onnx.ModelProto:
    """mlp-mnist for pcm: fc1 is W [784, 250] on four 256-row blocks."""
    mapped, _ = map_model(Path(MODELS_DIR) / "mlp-mnist.onnx", load_target("pcm"))
    contract.check_mapped(mapped)
    return mapped


def _first_analog(m: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in m.graph.node if contract.is_analog(n))


def _tiles(node: onnx.NodeProto) -> list[contract.TileBlock]:
    attr = next(a for a in node.attribute if a.name == "tiles")
    return contract.parse_tiles(helper.get_attribute_value(attr))


def _set_attr(node: onnx.NodeProto, attr: onnx.AttributeProto) -> None:
    keep = [a for a in node.attribute if a.name != attr.name]
    del node.attribute[:]
    node.attribute.extend([*keep, attr])


def _rejects(m: onnx.ModelProto, *words: str) -> str:
    with pytest.raises(AcompileError) as exc:
        contract.check_mapped(m)
    msg = str(exc.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_rejects_overlapping_tile_blocks(mlp_pcm):
    m = copy.deepcopy(mlp_pcm)
    node = _first_analog(m)
    blocks = _tiles(node)
    assert len(blocks) == 4 and blocks[1].row_start == 256
    # block 1 moved up by 56 rows: it overlaps block 0 (same size, so it still fits its tile)
    blocks[1] = contract.TileBlock(**{**blocks[1].to_json(), "row_start": 200, "row_end": 456})
    _set_attr(node, helper.make_attribute("tiles", contract.tiles_json(blocks)))
    _rejects(m, f"node '{node.name}'", "overlap")


def test_rejects_blocks_sharing_a_tile_at_one_place(mlp_pcm):
    m = copy.deepcopy(mlp_pcm)
    a, b = [n for n in m.graph.node if contract.is_analog(n)][:2]
    tb = _tiles(b)
    tb[0] = contract.TileBlock(**{**tb[0].to_json(), "tile": 0, "chip": 0})  # onto fc1's first tile at (0, 0)
    _set_attr(b, helper.make_attribute("tiles", contract.tiles_json(tb)))
    _rejects(m, f"'{a.name}'", f"'{b.name}'", "physical tile 0")


@pytest.mark.parametrize("key", contract.MAPPED_METADATA)
def test_rejects_a_missing_metadata_key(mlp_pcm, key):
    m = copy.deepcopy(mlp_pcm)
    meta = contract.read_metadata(m)
    del meta[key]
    contract.set_metadata(m, meta)
    _rejects(m, key, "not a model mapped by acompile")


def test_rejects_a_wrong_attribute_type(mlp_pcm):
    m = copy.deepcopy(mlp_pcm)
    node = _first_analog(m)
    assert node.op_type == contract.ANALOG_MATMUL
    _set_attr(node, helper.make_attribute("alpha", 1))  # INT, the spec says FLOAT
    _rejects(m, f"node '{node.name}' (AnalogMatMul)", "'alpha'", "FLOAT", "INT")


def test_rejects_g_scale_of_wrong_length(mlp_pcm):
    m = copy.deepcopy(mlp_pcm)
    node = _first_analog(m)
    g = next(t for t in m.graph.initializer if t.name == node.input[contract.IN_G_SCALE])
    short = numpy_helper.to_array(g)[:-1]
    g.CopyFrom(numpy_helper.from_array(short, g.name))
    _rejects(m, f"node '{node.name}'", "G_SCALE", f"[{len(short) + 1}]", f"[{len(short)}]")
