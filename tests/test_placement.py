"""Placement, duplication, pipelining (compiler/placement.py) and the HERMES calibration of the cost model.

Expected numbers are computed here independently of the compiler: conv output positions from ONNX shape
inference, blocks from the weight shapes, the best achievable bottleneck by trying every level, the peak
figures from the published HERMES numbers (Le Gallo et al., Nature Electronics 2023).
"""

from __future__ import annotations

import json
import math

import onnx
import pytest
from onnx import numpy_helper, shape_inference

from compiler import placement as plc
from compiler.cost import CostModel
from compiler.pipeline import map_model
from compiler.report import to_html, to_markdown
from compiler.report_plot import render_png, summary_lines
from compiler.targets import builtin_target, load_target
from models import model_path
from runtime import options as opt
from runtime.errors import AcompileError
from runtime.physics import constants as phys

RESNET = "resnet32-cifar10-plain.onnx"


@pytest.fixture(scope="module")
def resnet() -> dict:
    return map_model(model_path(RESNET), load_target("hermes"))[1]


@pytest.fixture(scope="module")
def resnet_packed() -> dict:
    return map_model(model_path(RESNET), load_target("hermes"), pack=True)[1]


def _plan(report: dict, tiles_per_chip: int, duplicate) -> dict:
    target = builtin_target("hermes")
    return plc.plan(report["layers"], report["blocks"], report["totals"]["tiles"], tiles_per_chip,
                    CostModel.from_target(target), duplicate)


def _independent_layers() -> list[tuple[str, int, int]]:
    """(node name, MVMs per inference, blocks on 256x256 tiles) of every Conv / Gemm of ResNet-32, from the
    ONNX file itself: conv MVMs = output H x W (shape inference), blocks from the weight shape."""
    m = shape_inference.infer_shapes(onnx.load(str(model_path(RESNET))))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type == "Conv":
            co, ci, kh, kw = inits[n.input[1]]
            h, w = shapes[n.output[0]][2:]
            out.append((n.name, h * w, math.ceil(ci * kh * kw / 256) * math.ceil(co / 256)))
        elif n.op_type == "Gemm":
            a, b = inits[n.input[1]]
            out.append((n.name, 1, math.ceil(a / 256) * math.ceil(b / 256)))
    return out


# ---- never oversubscribe a core ------------------------------------------------------------------------

@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("tpc", [64, 128, 7, 61])
@pytest.mark.parametrize("duplicate", [1, 2, 3, "auto"])
def test_placement_never_oversubscribes_a_core(resnet, resnet_packed, packed, tpc, duplicate):
    rep = resnet_packed if packed else resnet
    pl = _plan(rep, tpc, duplicate)
    n_tiles = rep["totals"]["tiles"]
    assert pl["chips"] == math.ceil(n_tiles / tpc) and pl["cores_total"] == pl["chips"] * tpc
    cores = pl["cores"]
    used = {c["core"] for c in cores}
    assert all(0 <= c["core"] < pl["cores_total"] for c in cores)
    assert len(used) == pl["cores_used"] <= pl["cores_total"]
    assert pl["cores_free"] == pl["cores_total"] - pl["cores_used"] >= 0
    assert all(c["chip"] == c["core"] // tpc and c["core_in_chip"] == c["core"] % tpc for c in cores)
    primary = {c["core"] for c in cores if c["copy"] == 0}
    assert primary == {b["tile"] for b in rep["blocks"]}
    copy_cores = [c["core"] for c in cores if c["copy"]]
    assert len(copy_cores) == len(set(copy_cores)), "a core holds two copies"
    assert not set(copy_cores) & primary, "a copy on a core the mapping uses"
    if not packed:  # one block per core
        assert len(cores) == len(used)
    blocks = {ly["name"]: ly["blocks"] for ly in rep["layers"] if ly["analog"]}
    for st in pl["stages"]:
        assert st["copies"] <= (math.inf if duplicate == "auto" else duplicate)
        for k in range(st["copies"]):  # every copy complete, its blocks on distinct cores
            mine = [c for c in cores if c["layer"] == st["layer"] and c["copy"] == k]
            assert len(mine) == blocks[st["layer"]]
            if k or not packed:  # --pack may put two blocks of a layer on one tile; copies never do
                assert len({c["core"] for c in mine}) == len(mine)
            assert sorted(c["block"] for c in mine) == sorted(
                i for i, b in enumerate(rep["blocks"]) if b["layer"] == st["layer"])
    assert sum(st["cores"] for st in pl["stages"]) == len(cores)


# ---- duplication on ResNet-32 ---------------------------------------------------------------------------

def test_bottleneck_without_duplication_is_the_arithmetic_one(resnet):
    layers = _independent_layers()
    t_ns = builtin_target("hermes")["cost"]["latency_per_mvm_ns"]
    name, mvms, _ = max(layers, key=lambda x: x[1])  # first of the largest: network order
    pl = resnet["placement"]
    assert pl["duplicate"] == 1 and pl["copies_added"] == 0
    assert pl["bottleneck"]["layer"] == name == "/conv1/Conv" and mvms == 32 * 32
    assert pl["pipelined"]["throughput_ips"] == pytest.approx(1e9 / (mvms * t_ns), rel=1e-6)
    total = sum(m for _, m, _ in layers) * t_ns * 1e-3
    assert pl["pipelined"]["latency_us"] == pytest.approx(total, rel=1e-6)
    assert pl["layer_by_layer"]["throughput_ips"] == pytest.approx(1e6 / total, rel=1e-6)
    assert [(st["layer"], st["mvms_per_inference"], st["blocks"]) for st in pl["stages"]] == layers


def test_one_hermes_chip_has_too_few_free_cores_for_resnet32(resnet):
    """60 of 64 cores hold ResNet-32; 11 layers tie at 1024 positions: 4 free cores cannot break the tie,
    so auto gives every copy back and says why."""
    pl = _plan(resnet, 64, "auto")
    assert pl["cores_free"] == 4 and pl["copies_added"] == 0 and pl["speedup_pipelined"] == 1.0
    assert "given back" in pl["duplication_stopped"]


def _best_level(layers: list[tuple[str, int, int]], free: int) -> int:
    """The smallest bottleneck (MVMs per copy) any duplication within `free` extra cores can reach."""
    levels = sorted({math.ceil(m / c) for _, m, _ in layers for c in range(1, m + 1)})
    for level in levels:
        extra = sum(b * (math.ceil(m / level) - 1) for _, m, b in layers)
        if extra <= free:
            return level
    raise AssertionError("unreachable")


@pytest.mark.parametrize("tpc", [128, 256])
def test_duplication_raises_pipelined_throughput_on_resnet32(resnet, tpc):
    layers = _independent_layers()
    t_ns = builtin_target("hermes")["cost"]["latency_per_mvm_ns"]
    base = _plan(resnet, tpc, 1)
    pl = _plan(resnet, tpc, "auto")
    assert pl["pipelined"]["throughput_ips"] > base["pipelined"]["throughput_ips"]
    level = _best_level(layers, tpc - resnet["totals"]["tiles"])
    assert pl["bottleneck"]["stage_time_us"] == pytest.approx(level * t_ns * 1e-3, rel=1e-9)
    assert pl["pipelined"]["throughput_ips"] == pytest.approx(1e9 / (level * t_ns), rel=1e-6)
    # the bottleneck is the first layer (network order) whose positions per copy reach that level
    copies = {st["layer"]: st["copies"] for st in pl["stages"]}
    name = next(n for n, m, _ in layers if math.ceil(m / copies[n]) == level)
    assert pl["bottleneck"]["layer"] == name
    assert pl["without_duplication"]["pipelined"] == base["pipelined"]
    assert pl["speedup_pipelined"] == pytest.approx(1024 / level, rel=1e-6)
    if tpc == 128:  # 1024 -> 205 positions: 11 layers x 5 copies, the 256-position ones x 2
        assert level == 205 and pl["cores_used"] == 123


def test_duplicate_n_caps_the_copies(resnet):
    pl = _plan(resnet, 128, 2)
    assert max(st["copies"] for st in pl["stages"]) == 2
    assert pl["bottleneck"]["stage_time_us"] == pytest.approx(512 * 132.9e-3, rel=1e-9)
    assert "would need 3 copies to get faster, more than the 2 allowed" in pl["duplication_stopped"]


def test_multi_chip_places_in_order(resnet):
    """Chips of 7 cores: ResNet-32's 60 tiles on 9 chips, tile t on chip t // 7; copies only on the 3 free
    cores of the last chip."""
    pl = _plan(resnet, 7, "auto")
    assert pl["chips"] == 9 and pl["cores_free"] + pl["copies_added"] * 0 <= 3
    for c in pl["cores"]:
        if c["copy"] == 0:
            assert (c["chip"], c["core_in_chip"]) == divmod(resnet["blocks"][c["block"]]["tile"], 7)
        else:
            assert c["core"] >= 60 and c["chip"] == 8


# ---- HERMES calibration ---------------------------------------------------------------------------------

def test_hermes_calibration_reproduces_the_published_figures():
    """63.1 TOPS / 9.76 TOPS/W (1-phase) within the stated tolerance; a drifting [cost] figure or energy /
    latency coefficient of the model fails here."""
    target = builtin_target("hermes")
    cost = CostModel.from_target(target)
    figs = plc.peak(cost, 256, 256, target["tile"]["tiles_per_chip"])
    tol = phys.HERMES_CALIBRATION_TOLERANCE
    assert tol <= 0.005
    one = figs["1-phase"]
    assert one["tops"] == pytest.approx(63.1, rel=tol)
    assert one["tops_per_w"] == pytest.approx(9.76, rel=tol)
    # from first principles: 64 cores x 2 x 256 x 256 ops per 132.9 ns; 131072 ops per 13.43 nJ
    assert one["tops"] == pytest.approx(64 * 131072 / 132.9e-9 * 1e-12, rel=1e-6)
    assert one["tops_per_w"] == pytest.approx(131072 / 13430e-12 * 1e-12, rel=1e-6)
    # four-phase = 4 one-phase reads: 15.78 TOPS (-2.0 % vs 16.1) and 2.44 TOPS/W (-1.6 % vs 2.48)
    four = figs["4-phase"]
    assert four["tops"] == pytest.approx(one["tops"] / 4) and four["tops_per_w"] == pytest.approx(
        one["tops_per_w"] / 4)
    cmp = plc.compare_hermes(figs)
    assert cmp["4-phase"]["tops"]["error"] == pytest.approx(15.78 / 16.1 - 1, abs=1e-3)
    assert cmp["4-phase"]["tops_per_w"]["error"] == pytest.approx(2.44 / 2.48 - 1, abs=1e-3)
    assert abs(cmp["1-phase"]["tops"]["error"]) < tol and abs(cmp["1-phase"]["tops_per_w"]["error"]) < tol


def test_published_figures_and_movement_coefficient_are_pinned():
    assert phys.HERMES_PUBLISHED == {1: {"tops": 63.1, "tops_per_w": 9.76},
                                     4: {"tops": 16.1, "tops_per_w": 2.48}}
    assert phys.READ_PHASES == (1, 4)
    assert phys.MOVEMENT_PJ_PER_BYTE == 1.25
    assert phys.COST_LATENCY_ADC_SHARE == pytest.approx(256 * 0.3 / 132.9, rel=1e-3)


def test_report_energy_breakdown_with_movement(resnet):
    pf = resnet["performance"]
    t = resnet["totals"]
    split = t["energy_breakdown_uj"]
    br = pf["energy_breakdown_uj"]
    assert set(br) == {"crossbar", "adc_dac", "digital", "movement"}
    assert br["crossbar"] == pytest.approx(split["array"])
    assert br["adc_dac"] == pytest.approx(split["adc"] + split["dac"])
    assert pf["energy_per_inference_uj"] == pytest.approx(t["energy_per_inference_uj"] + br["movement"])
    # bytes: each block gets its rows' inputs and sends its columns' outputs, 1 byte each at 8 bits
    expected = sum(m * (K * math.ceil(N / 256) + N * math.ceil(K / 256))
                   for ly in resnet["layers"] if ly["analog"]
                   for m, (K, N) in [(ly["mvms_per_inference"], ly["matrix"])])
    assert pf["movement"]["bytes_per_inference"] == expected
    assert br["movement"] == pytest.approx(expected * 1.25e-6, rel=1e-6)
    assert pf["vs_published_hermes"]["1-phase"]["tops"]["published"] == 63.1


def test_a_user_movement_energy_per_byte_scales_the_movement_term(resnet, tmp_path):
    """[cost].movement_pj_per_byte of a user target: the same bytes, each at the new figure; the MVM terms,
    the peak figures and the HERMES calibration do not move."""
    f = tmp_path / "mv.toml"
    f.write_text('base = "hermes"\n[cost]\nmovement_pj_per_byte = 4.0\n')
    target = load_target(str(f))
    rep = map_model(model_path(RESNET), target)[1]
    mv, mv0 = rep["performance"]["movement"], resnet["performance"]["movement"]
    assert mv["bytes_per_inference"] == mv0["bytes_per_inference"] and mv["pj_per_byte"] == 4.0
    assert mv["energy_uj"] == pytest.approx(mv0["bytes_per_inference"] * 4.0e-6, rel=1e-9)
    assert mv["energy_uj"] == pytest.approx(mv0["energy_uj"] * 4.0 / phys.MOVEMENT_PJ_PER_BYTE, rel=1e-9)
    br, br0 = rep["performance"]["energy_breakdown_uj"], resnet["performance"]["energy_breakdown_uj"]
    assert {k: br[k] for k in ("crossbar", "adc_dac", "digital")} == {k: br0[k] for k in
                                                                       ("crossbar", "adc_dac", "digital")}
    assert rep["performance"]["peak"] == resnet["performance"]["peak"]
    assert "4 pJ per byte" in rep["placement"]["assumption"]
    assert "at 4 pJ/byte" in to_markdown(rep)


# ---- report, picture, CLI -------------------------------------------------------------------------------

def test_report_renders_placement(resnet):
    rep = json.loads(json.dumps(resnet))
    rep["placement"] = _plan(rep, 128, "auto")
    md = to_markdown(rep)
    assert "## Placement, duplication and pipelining" in md and "| bottleneck |" in md
    assert "L0'4" in md and "without duplication" in md and "HERMES published 63.1 TOPS" in md
    assert "Placement, duplication and pipelining" in to_html(rep)
    assert any("bottleneck L0 /conv1/Conv" in line for line in summary_lines(rep))
    assert render_png(rep)[:4] == b"\x89PNG"
    old = json.loads(json.dumps(resnet))
    del old["placement"], old["performance"]
    assert "Placement" not in to_markdown(old) and render_png(old)


@pytest.mark.parametrize("text, value", [("auto", "auto"), ("AUTO", "auto"), ("1", 1), ("4", 4)])
def test_duplicate_option_values(text, value):
    assert opt.parse_duplicate(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "x", "", "1.5", str(opt.MAX_COPIES + 1)])
def test_duplicate_option_refuses(text):
    with pytest.raises(AcompileError, match="--duplicate must be 'auto' or"):
        opt.parse_duplicate(text)


def test_cli_duplicate(run_cli, tmp_path):
    code, out, err = run_cli(model_path(RESNET), "--target", "hermes", "--duplicate", "auto", "-o",
                             tmp_path / "r.onnx")
    assert code == 0, err
    assert "pipelined: ~7,348 inferences/s (bottleneck /conv1/Conv)" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["placement"]["duplicate"] == "auto" and "performance" in rep
    assert "## Placement" in (tmp_path / "r.md").read_text()
    code, _, err = run_cli(model_path(RESNET), "--duplicate", "0", "-o", tmp_path / "s.onnx")
    assert code == 2 and "--duplicate must be 'auto' or an integer in 1.." in err


def test_copies_are_bounded_on_a_huge_chip(resnet, monkeypatch):
    monkeypatch.setattr(plc, "MAX_COPY_CORES", 500)
    pl = _plan(resnet, 1_000_000, "auto")
    assert 0 < pl["cores_used"] - resnet["totals"]["tiles"] <= 500
    assert pl["pipelined"]["throughput_ips"] > pl["without_duplication"]["pipelined"]["throughput_ips"]
