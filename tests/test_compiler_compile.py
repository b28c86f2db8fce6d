"""End-to-end compiler tests on real networks (models/archs.py) exported with torch.

Tile counts are checked against hand-computed values: a matrix of rows x cols needs
ceil(rows/256) * ceil(cols/256) tiles of 256x256 (conv rows = C_in*kh*kw, cols = C_out).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.tiling import Block, check_no_overlap
from runtime import contract


def tiles(rows: int, cols: int, r: int = 256, c: int = 256) -> int:
    return math.ceil(rows / r) * math.ceil(cols / c)


def compile_ok(run_cli, src: Path, out: Path, *args: str) -> dict:
    code, stdout, stderr = run_cli(src, "-o", out, *args)
    assert code == 0, stderr
    assert out.is_file()
    for ext in ("json", "md", "png"):
        assert out.with_suffix(f".{ext}").is_file(), ext
    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    assert any(n.domain == contract.DOMAIN for n in m.graph.node)
    return json.loads(out.with_suffix(".json").read_text())


def analog_nodes(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.domain == contract.DOMAIN]


def test_resnet20_tiles_and_bn_kept(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("resnet20"), tmp_path / "r20.onnx")
    # conv1 27x16 -> 1
    # stage 1: 6 convs 144x16 -> 6 x 1 = 6
    # stage 2: 144x32 -> 1, 5 convs 288x32 -> 5 x (2*1) = 10, shortcut 16x32 -> 1   => 12
    # stage 3: 288x64 -> 2, 5 convs 576x64 -> 5 x (3*1) = 15, shortcut 32x64 -> 1   => 18
    # fc 64x10 -> 1
    expected = 1 + 6 + (tiles(144, 32) + 5 * tiles(288, 32) + tiles(16, 32)) \
        + (tiles(288, 64) + 5 * tiles(576, 64) + tiles(32, 64)) + tiles(64, 10)
    assert expected == 1 + 6 + 12 + 18 + 1 == 38
    assert rep["totals"]["tiles"] == 38
    assert rep["totals"]["analog_layers"] == 22 and rep["totals"]["digital_layers"] == 0
    assert rep["digital_ops"]["BatchNormalization"] == 21
    assert rep["totals"]["chips"] == 1
    weights = sum(ly["weights"] for ly in rep["layers"])
    assert rep["totals"]["devices"] == 2 * weights
    assert rep["totals"]["utilization"] == pytest.approx(weights / (38 * 256 * 256), abs=1e-6)
    # conv1 on 32x32 output -> 1024 MVMs; every MVM costs the cells and converters its blocks use
    # (compiler/cost.py, calibrated on pcm's 12483 pJ per full 256x256 8-bit MVM; tests/test_cost_model.py)
    conv1 = rep["layers"][0]
    assert conv1["matrix"] == [27, 16] and conv1["mvms_per_inference"] == 32 * 32
    from runtime.physics.constants import COST_ENERGY_SHARE as share

    e = {"cell": share["array"] * 12483.0 / 256 ** 2, "dac": share["dac"] * 12483.0 / 256,
         "out": (share["adc"] + share["digital"]) * 12483.0 / 256}
    expected_pj = sum(ly["mvms_per_inference"] * (e["cell"] * r * c + e["dac"] * r * -(-c // 256)
                                                   + e["out"] * c * -(-r // 256))
                      for ly in rep["layers"] for r, c in [ly["matrix"]])
    assert rep["totals"]["energy_per_inference_uj"] == pytest.approx(expected_pj * 1e-6, rel=1e-5)
    ops = {n.op_type for n in analog_nodes(tmp_path / "r20.onnx")}
    assert ops == {contract.ANALOG_CONV, contract.ANALOG_MATMUL}  # no ConvTranspose in a ResNet


def test_resnet20_dynamo_exporter_same_mapping(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("resnet20", dynamo=True), tmp_path / "r20d.onnx")
    assert rep["totals"]["tiles"] == 38
    assert rep["digital_ops"]["BatchNormalization"] == 21  # BN not folded by the frontend
    assert "Expand" not in rep["digital_ops"] and "Shape" not in rep["digital_ops"]


def test_mlp_matmul_ideal_weights_exact(run_cli, onnx_export, tmp_path):
    from models.archs import mlp_matmul

    rep = compile_ok(run_cli, onnx_export("mlp_matmul"), tmp_path / "mlp.onnx", "--target", "ideal")
    # 784x300 -> 4*2 = 8, 300x100 -> 2*1 = 2, 100x10 -> 1
    assert [ly["tiles"] for ly in rep["layers"]] == [8, 2, 1]
    assert rep["totals"]["tiles"] == 11
    model, _ = mlp_matmul()
    nodes = analog_nodes(tmp_path / "mlp.onnx")
    assert [n.op_type for n in nodes] == [contract.ANALOG_MATMUL] * 3
    mapped = onnx.load(str(tmp_path / "mlp.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in mapped.graph.initializer}
    for node, w in zip(nodes, model.weights, strict=True):
        W = inits[node.input[1]]
        assert np.array_equal(W, w.detach().numpy())
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["orig_op"] == b"MatMul"
        blocks = json.loads(attrs["tiles"])
        assert len(blocks) == tiles(*W.shape)
        g = inits[node.input[2]]
        assert np.allclose(g, 25.0 / np.abs(W).max())  # per-layer scale, g_max 25 uS


def test_ideal_conv_weights_exact(run_cli, onnx_export, tmp_path):
    from models.archs import resnet_cifar

    compile_ok(run_cli, onnx_export("resnet20"), tmp_path / "r.onnx", "--target", "ideal")
    model, _ = resnet_cifar(20)
    convs = [m.weight.detach().numpy() for m in model.modules() if hasattr(m, "weight")
             and m.weight is not None and m.weight.ndim == 4]
    m = onnx.load(str(tmp_path / "r.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    got = [inits[n.input[1]] for n in m.graph.node if n.op_type == contract.ANALOG_CONV]
    assert len(got) == len(convs)
    for W, w in zip(got, convs, strict=True):
        assert np.array_equal(W.T.reshape(w.shape), w)
    assert contract.read_target(m)["name"] == "ideal"


def test_mobilenet_depthwise_digital(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("mobilenet"), tmp_path / "mb.onnx")
    dw = [ly for ly in rep["layers"] if not ly["analog"]]
    assert len(dw) == 4 and all("depthwise" in ly["reason"] for ly in dw)
    # stem 27x32, pointwise 32x64, 64x128, 128x128, 128x256, fc 256x10: one tile each
    assert rep["totals"]["tiles"] == 6


def test_vgg_tiles_tile_override_and_digital(run_cli, onnx_export, tmp_path):
    src = onnx_export("vgg")
    rep = compile_ok(run_cli, src, tmp_path / "v.onnx")
    # convs 27x64, 576x64, 576x128, 1152x128, 1152x256, 2304x256; fc1 4096x512, fc2 512x10
    per = [1, 3, 3, 5, 5, 9, 16 * 2, 2 * 1]
    assert [ly["tiles"] for ly in rep["layers"]] == per and rep["totals"]["tiles"] == 60
    rep = compile_ok(run_cli, src, tmp_path / "v512.onnx", "--tile", "512x512", "--digital",
                     "features.0,fc2", "--target", "hermes")
    # 512x512: 576x64 -> 2, 576x128 -> 2, 1152x128 -> 3, 1152x256 -> 3, 2304x256 -> 5, fc1 8*1 = 8
    assert rep["totals"]["tiles"] == 2 + 2 + 3 + 3 + 5 + 8
    assert rep["tile"] == {"rows": 512, "cols": 512}
    forced = [ly for ly in rep["layers"] if not ly["analog"]]
    assert len(forced) == 2 and all(ly["reason"] == "forced digital (--digital)" for ly in forced)
    assert rep["totals"]["devices"] == 4 * sum(ly["weights"] for ly in rep["layers"] if ly["analog"])


def test_pack_saves_tiles_without_overlap(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("resnet20"), tmp_path / "p.onnx", "--pack")
    assert rep["packed"] and rep["totals"]["tiles"] < 38
    assert rep["totals"]["tiles_saved_by_packing"] == 38 - rep["totals"]["tiles"]
    # the analog weights (270,896 after all) need at least ceil(weights / 65536) tiles
    weights = sum(ly["weights"] for ly in rep["layers"])
    assert rep["totals"]["tiles"] >= math.ceil(weights / 65536)
    blocks = [Block(0, b["row_start"], b["row_end"], b["col_start"], b["col_end"], b["tile"],
                    b["tile_row"], b["tile_col"]) for b in rep["blocks"]]
    assert len(blocks) == 38 and check_no_overlap(blocks, 256, 256)
    # the tiles attributes in the artifact carry the same placement
    n = sum(len(json.loads(onnx.helper.get_attribute_value(
        next(a for a in node.attribute if a.name == "tiles")))) for node in analog_nodes(tmp_path / "p.onnx"))
    assert n == 38


def test_weight_scale_column(run_cli, onnx_export, tmp_path):
    compile_ok(run_cli, onnx_export("mlp_matmul"), tmp_path / "c.onnx", "--weight-scale", "column")
    m = onnx.load(str(tmp_path / "c.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    node = analog_nodes(tmp_path / "c.onnx")[0]
    W, g = inits[node.input[1]], inits[node.input[2]]
    assert np.allclose(g, 25.0 / np.abs(W).max(axis=0))
    assert np.all(np.abs(W) * g <= 25.0 * (1 + 1e-6))


def test_resnet50_small_tiles(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("resnet50_small"), tmp_path / "r50s.onnx")
    expected = resnet50_tiles(base=8, classes=10)
    assert rep["totals"]["tiles"] == expected
    assert rep["totals"]["analog_layers"] == 54


def resnet50_tiles(base: int, classes: int, r: int = 256, c: int = 256) -> int:
    """Hand count for the bottleneck net: stem 7x7, per block 1x1 / 3x3 / 1x1 (+ 1x1 downsample)."""
    total = tiles(3 * 49, base, r, c)
    in_ch = base
    for stage, n in enumerate((3, 4, 6, 3)):
        width = base * 2**stage
        for j in range(n):
            total += tiles(in_ch, width, r, c) + tiles(width * 9, width, r, c) + tiles(width, 4 * width, r, c)
            if j == 0:
                total += tiles(in_ch, 4 * width, r, c)
            in_ch = 4 * width
    return total + tiles(in_ch, classes, r, c)


@pytest.mark.slow
def test_resnet50_full(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("resnet50"), tmp_path / "r50.onnx", "--target", "hermes")
    weights = sum(ly["weights"] for ly in rep["layers"])
    assert weights == 25_502_912
    assert rep["totals"]["tiles"] == resnet50_tiles(64, 1000)
    assert rep["totals"]["chips"] == math.ceil(rep["totals"]["tiles"] / 64)


def test_report_command_formats(run_cli, onnx_export, tmp_path):
    out = tmp_path / "m.onnx"
    compile_ok(run_cli, onnx_export("mlp_matmul"), out)
    code, md, err = run_cli("report", out, "--format", "md")
    assert code == 0 and md.startswith("# Tile mapping report") and "784x300" in md
    code, js, _ = run_cli("report", out, "--format", "json")
    assert code == 0 and json.loads(js)["schema"] == "acompile.report/1"
    assert json.loads(js)["totals"] == json.loads(out.with_suffix(".json").read_text())["totals"]
    code, _, _ = run_cli("report", out, "--format", "html", "-o", tmp_path / "r.html")
    assert code == 0 and "<table>" in (tmp_path / "r.html").read_text()
    code, _, _ = run_cli("report", out, "--format", "png", "-o", tmp_path / "r.png")
    assert code == 0 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run_cli("report", onnx_export("mlp_matmul"))
    assert code == 2 and "not a model mapped by acompile" in err


def test_default_output_and_metadata_kept(run_cli, onnx_export, tmp_path):
    m = onnx.load(str(onnx_export("mlp_matmul")))
    m.metadata_props.append(onnx.StringStringEntryProto(key=contract.META_PREPROCESSING, value='{"x": 1}'))
    src = tmp_path / "net.onnx"
    onnx.save(m, str(src))
    code, out, err = run_cli(src)
    assert code == 0, err
    dst = tmp_path / "net.pcm.onnx"
    assert dst.is_file() and all((tmp_path / f"net.pcm.{e}").is_file() for e in ("json", "md", "png"))
    meta = {p.key: p.value for p in onnx.load(str(dst)).metadata_props}
    assert meta[contract.META_PREPROCESSING] == '{"x": 1}'
    assert meta[contract.META_FORMAT] == contract.FORMAT_VERSION
    assert json.loads(meta[contract.META_MAPPING])["totals"]["tiles"] == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["net.onnx", "net.pcm.onnx", "net.pcm.json", "net.pcm.md", "net.pcm.png"])


def test_opsets_13_and_old_converted(run_cli, onnx_export, tmp_path):
    rep = compile_ok(run_cli, onnx_export("mlp_matmul", opset=13), tmp_path / "o13.onnx")
    assert rep["totals"]["tiles"] == 11
    # an opset-11 model is brought to opset 17 by onnx.version_converter
    rep = compile_ok(run_cli, onnx_export("vgg", opset=11), tmp_path / "o11.onnx")
    assert rep["totals"]["tiles"] == 60
    m = onnx.load(str(tmp_path / "o11.onnx"))
    assert {o.domain: o.version for o in m.opset_import}[""] == 17


def test_targets_command(run_cli):
    code, out, _ = run_cli("targets")
    assert code == 0
    for name in ("pcm:", "hermes:", "ideal:", "g_max=25.0", "g_max=20.7", "t0=300.0"):
        assert name in out


def test_extra_args_need_eval(run_cli, onnx_export, tmp_path):
    code, _, err = run_cli(onnx_export("mlp_matmul"), "-o", tmp_path / "x.onnx", "--times", "1s")
    assert code == 2 and "--times" in err
    assert not list(tmp_path.iterdir())


def test_eval_hands_over_to_runtime(run_cli, onnx_export, tmp_path, monkeypatch):
    """`--eval` compiles, then calls runtime.cli.eval_cmd with the mapped path and the extra options."""
    import sys
    import types

    import click

    seen = {}

    @click.command("eval", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def fake_eval(args):
        seen["args"] = list(args)

    fake = types.ModuleType("runtime.cli")
    fake.eval_cmd = fake_eval
    monkeypatch.setitem(sys.modules, "runtime.cli", fake)
    out = tmp_path / "e.onnx"
    code, _, err = run_cli(onnx_export("mlp_matmul"), "-o", out, "--eval", "--data", "mnist", "--times", "1s")
    assert code == 0, err
    assert seen["args"] == [str(out), "--data", "mnist", "--times", "1s"]


def test_first_last_layer_policy_from_user_target(run_cli, onnx_export, tmp_path):
    """networkx finds the analog layers with no analog ancestor/descendant: conv1 and fc of ResNet-20."""
    f = tmp_path / "edge.toml"
    f.write_text('base = "pcm"\n[mapping]\nfirst_layer = "digital"\nlast_layer = "digital"\n')
    rep = compile_ok(run_cli, onnx_export("resnet20"), tmp_path / "fl.onnx", "--target", f)
    digital = [ly for ly in rep["layers"] if not ly["analog"]]
    assert [ly["matrix"] for ly in digital] == [[27, 16], [64, 10]]
    assert digital[0]["reason"].startswith("first layer") and digital[1]["reason"].startswith("last layer")
    assert rep["totals"]["tiles"] == 38 - 2 and rep["target"] == "edge"
    code, out, _ = run_cli("targets", f)
    assert code == 0 and "first_layer=digital" in out


def test_symbolic_batch_is_fine(run_cli, onnx_export, tmp_path):
    src = onnx_export("resnet20", dynamic_batch=True)
    dim = onnx.load(str(src)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.HasField("dim_value")
    rep = compile_ok(run_cli, src, tmp_path / "b.onnx")
    assert rep["totals"]["tiles"] == 38 and rep["layers"][0]["mvms_per_inference"] == 1024
