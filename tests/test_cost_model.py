"""The tile-MVM cost model (compiler/cost.py): calibrated on the targets' full-tile figures, and scaling
with the rows, columns and converter bits a block actually uses.

The expected numbers are computed here from the formula and runtime/physics/constants.py, never copied
from a run: per MVM of a block of r rows x c columns at the reference bits,
    E = s_array E_ref r c / (R_ref C_ref) + s_dac E_ref r / R_ref + (s_adc + s_digital) E_ref c / C_ref,
so for a K x N weight on R x C tiles (block sums: sum r c = K N, sum r = K ceil(N/C), sum c = N ceil(K/R))
    E_layer = mvms (a K N + d K ceil(N/C) + o N ceil(K/R)).
Prediction for tile sizes: the array term is the same for every tile size, and a smaller tile costs more
only through the extra DAC conversions of column-split and the extra ADC + digital work of row-split
matrices (each row block converts its own partial sums). The old model charged every block a full tile's
MVM, so 128x128 tiles cost ~blocks(128)/blocks(256) times more than 256x256 (1.78x on ResNet-32).
"""

from __future__ import annotations

import ast
import copy
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.cost import TERMS, CostModel
from compiler.pipeline import map_model
from compiler.report import to_html, to_markdown
from compiler.report_plot import summary_lines
from compiler.targets import builtin_target, load_target, with_overrides
from models import model_path
from runtime.errors import AcompileError
from runtime.physics import constants as phys

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lenet5-mnist.onnx", "resnet32-cifar10-plain.onnx")
SIZES = (128, 256, 512)


def _coeffs(target: dict) -> dict[str, float]:
    """Per-cell, per-DAC and per-output (ADC + digital) energy at the reference bits, from the target's
    [cost] shares (the built-ins': constants.COST_ENERGY_SHARE, checked below)."""
    s = {t: target["cost"][f"share_{t}"] for t in TERMS}
    E = target["cost"]["energy_per_mvm_pj"]
    R, C = phys.COST_REF_ROWS, phys.COST_REF_COLS
    return {"a": s["array"] * E / (R * C), "d": s["dac"] * E / R, "o": (s["adc"] + s["digital"]) * E / C}


def _expected_uj(report: dict, target: dict, R: int, C: int) -> float:
    """Energy per inference from the closed form (matrix shapes and MVM counts only, not the blocks)."""
    k = _coeffs(target)
    pj = sum(ly["mvms_per_inference"] * (k["a"] * K * N + k["d"] * K * math.ceil(N / C)
                                         + k["o"] * N * math.ceil(K / R))
             for ly in report["layers"] if ly["analog"] for K, N in [ly["matrix"]])
    return pj * 1e-6


@pytest.fixture(scope="module")
def reports() -> dict[tuple[str, int], dict]:
    pcm = load_target("pcm")
    return {(m, s): map_model(model_path(m), with_overrides(pcm, (s, s)))[1] for m in MODELS for s in SIZES}


# ---- calibration -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pcm", "hermes", "ideal", "rram"])
def test_full_reference_mvm_is_the_targets_figure(name):
    target = builtin_target(name)
    model = CostModel.from_target(target)
    full = model.block_energy_pj(256, 256)
    assert sum(full.values()) == pytest.approx(target["cost"]["energy_per_mvm_pj"], rel=1e-12)
    assert model.mvm_latency_ns()["mvm"] == pytest.approx(target["cost"]["latency_per_mvm_ns"], rel=1e-12)
    # the split is the stated one
    for t in TERMS:
        assert full[t] == pytest.approx(phys.COST_ENERGY_SHARE[t] * target["cost"]["energy_per_mvm_pj"])


def test_reference_figures_are_the_published_ones():
    ops = 2 * 256 * 256  # one 256x256 MVM
    assert builtin_target("pcm")["cost"]["energy_per_mvm_pj"] == pytest.approx(
        ops / (phys.HERMES_CORE_TOPS_PER_W * 1e12) * 1e12, rel=1e-4)
    assert builtin_target("hermes")["cost"]["energy_per_mvm_pj"] == pytest.approx(
        ops / (phys.HERMES_TOPS_PER_W * 1e12) * 1e12, rel=1e-4)
    # 63.1 TOPS / 64 cores -> 132.9 ns per core MVM; the targets round it to 130 ns
    assert phys.HERMES_MVM_TIME == pytest.approx(132.9e-9, rel=1e-3)
    assert builtin_target("pcm")["cost"]["latency_per_mvm_ns"] == pytest.approx(
        phys.HERMES_MVM_TIME * 1e9, rel=0.03)
    # ADC share of the MVM time: 256 LSB x 300 ps of 132.9 ns
    assert phys.COST_LATENCY_ADC_SHARE == pytest.approx(256 * 0.3 / 132.9, rel=1e-3)


def test_one_full_matmul_through_the_compiler_costs_the_reference(tmp_path):
    """A 256x256 MatMul at batch 1 is one full tile MVM: exactly the target's figures."""
    for name in ("pcm", "hermes"):
        target = load_target(name)
        rep = map_model(_matmul(tmp_path, 256, 256), target)[1]
        assert rep["totals"]["energy_per_inference_uj"] == pytest.approx(
            target["cost"]["energy_per_mvm_pj"] * 1e-6, rel=1e-5)
        assert rep["totals"]["latency_per_inference_us"] == pytest.approx(
            target["cost"]["latency_per_mvm_ns"] * 1e-3, rel=1e-5)


# ---- partial tiles -------------------------------------------------------------------------------------

def test_partial_tiles_cost_less_by_what_they_leave_idle(tmp_path):
    target = load_target("pcm")
    model = CostModel.from_target(target)
    E = target["cost"]["energy_per_mvm_pj"]
    s = phys.COST_ENERGY_SHARE
    full = sum(model.block_energy_pj(256, 256).values())
    half_rows = sum(model.block_energy_pj(128, 256).values())
    half_cols = sum(model.block_energy_pj(256, 128).values())
    quarter = sum(model.block_energy_pj(128, 128).values())
    assert quarter < half_rows < full and quarter < half_cols < full
    # half the rows: half the cells and DAC conversions, every column still converted
    assert half_rows == pytest.approx(E * (s["array"] / 2 + s["dac"] / 2 + s["adc"] + s["digital"]))
    # half the columns: half the cells, ADC conversions and outputs, every row still driven
    assert half_cols == pytest.approx(E * (s["array"] / 2 + s["dac"] + s["adc"] / 2 + s["digital"] / 2))
    # through the compiler: a 128x256 weight on a 256x256 tile costs the half-rows figure
    rep = map_model(_matmul(tmp_path, 128, 256), target)[1]
    assert rep["totals"]["tiles"] == 1 and rep["layers"][0]["utilization"] == 0.5
    assert rep["totals"]["energy_per_inference_uj"] == pytest.approx(half_rows * 1e-6, rel=1e-5)
    assert rep["totals"]["energy_per_inference_uj"] < E * 1e-6


# ---- tile size on the bundled models -------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_energy_follows_the_closed_form_at_every_tile_size(reports, model):
    target = load_target("pcm")
    for s in SIZES:
        rep = reports[(model, s)]
        assert rep["totals"]["energy_per_inference_uj"] == pytest.approx(_expected_uj(rep, target, s, s),
                                                                         rel=1e-5, abs=1e-6)
        split = rep["totals"]["energy_breakdown_uj"]
        assert sum(split.values()) == pytest.approx(rep["totals"]["energy_per_inference_uj"], abs=1e-7)
        layers = [ly for ly in rep["layers"] if ly["analog"]]
        assert sum(ly["energy_per_inference_uj"] for ly in layers) == pytest.approx(
            rep["totals"]["energy_per_inference_uj"], abs=1e-7)


@pytest.mark.parametrize("model", MODELS)
def test_smaller_tiles_cost_only_their_extra_conversions(reports, model):
    """What the model predicts: the same array energy at every tile size; 128x128 costs more than
    256x256 exactly by the extra conversions of split matrices, far less than the old per-block charge."""
    target = load_target("pcm")
    k = _coeffs(target)
    r128, r256, r512 = (reports[(model, s)] for s in SIZES)
    e = {s: reports[(model, s)]["totals"]["energy_per_inference_uj"] for s in SIZES}
    arrays = {reports[(model, s)]["totals"]["energy_breakdown_uj"]["array"] for s in SIZES}
    assert max(arrays) - min(arrays) < 1e-5  # cells driven do not depend on the tile size
    extra_pj = sum(ly["mvms_per_inference"] * (k["d"] * K * (math.ceil(N / 128) - math.ceil(N / 256))
                                               + k["o"] * N * (math.ceil(K / 128) - math.ceil(K / 256)))
                   for ly in r256["layers"] if ly["analog"] for K, N in [ly["matrix"]])
    assert e[128] - e[256] == pytest.approx(extra_pj * 1e-6, rel=1e-4, abs=1e-5)
    assert e[128] >= e[256] >= e[512]  # bigger tiles: fewer partial sums to convert
    # the old artefact: every extra block MVM charged a full 256x256 MVM, whatever the block's size
    old_extra_uj = (r128["totals"]["tile_mvms_per_inference"] - r256["totals"]["tile_mvms_per_inference"]) \
        * target["cost"]["energy_per_mvm_pj"] * 1e-6
    assert e[128] - e[256] < old_extra_uj
    # and a full 128x128 MVM is cheaper than a full 256x256 one (a quarter of the cells, half the converters)
    assert r128["cost_model"]["full_tile_mvm_pj"] < r256["cost_model"]["full_tile_mvm_pj"] \
        < r512["cost_model"]["full_tile_mvm_pj"]


@pytest.mark.parametrize("k, n", [(100, 100), (128, 64), (27, 16)])
def test_a_matrix_that_fits_either_tile_costs_the_same_on_both(tmp_path, k, n):
    """No artefact left: a weight that fits one 128x128 tile uses the same cells and converters on a
    256x256 or 512x512 tile, so it costs exactly the same."""
    pcm = load_target("pcm")
    src = _matmul(tmp_path, k, n)
    e = {s: map_model(src, with_overrides(pcm, (s, s)))[1]["totals"]["energy_per_inference_uj"]
         for s in SIZES}
    assert e[128] == e[256] == e[512] > 0


@pytest.mark.parametrize("model", MODELS)
def test_latency_is_mvms_times_one_mvm_at_every_tile_size(reports, model):
    """A layer's blocks run in parallel and one MVM's time depends on the converter bits only."""
    t_ns = load_target("pcm")["cost"]["latency_per_mvm_ns"]
    for s in SIZES:
        rep = reports[(model, s)]
        mvms = sum(ly["mvms_per_inference"] for ly in rep["layers"] if ly["analog"])
        assert rep["totals"]["latency_per_inference_us"] == pytest.approx(mvms * t_ns * 1e-3, rel=1e-6)


# ---- converter bits ------------------------------------------------------------------------------------

def _with_bits(dac: int, adc: int) -> CostModel:
    target = copy.deepcopy(builtin_target("pcm"))
    target["periphery"]["dac_bits"], target["periphery"]["adc_bits"] = dac, adc
    return CostModel.from_target(target)


def test_more_adc_bits_cost_more_energy_and_time():
    ref = _with_bits(8, 8)
    E, s = builtin_target("pcm")["cost"]["energy_per_mvm_pj"], phys.COST_ENERGY_SHARE
    energies = [sum(_with_bits(8, b).block_energy_pj(256, 256).values()) for b in (4, 6, 8, 10, 12)]
    assert energies == sorted(energies) and len(set(energies)) == len(energies)
    # the ADC term goes as 2^bits (CCO count / Walden FOM); nothing else changes
    assert _with_bits(8, 10).block_energy_pj(256, 256)["adc"] == pytest.approx(4 * s["adc"] * E)
    assert _with_bits(8, 10).block_energy_pj(256, 256)["array"] == ref.block_energy_pj(256, 256)["array"]
    times = [_with_bits(8, b).mvm_latency_ns()["mvm"] for b in (4, 6, 8, 10)]
    assert times == sorted(times)


def test_more_dac_bits_lengthen_the_input_window():
    E, s = builtin_target("pcm")["cost"]["energy_per_mvm_pj"], phys.COST_ENERGY_SHARE
    m = _with_bits(9, 8)  # PWM: 2^(bits-1) steps -> twice the window of 8 bits
    e = m.block_energy_pj(256, 256)
    assert e["array"] == pytest.approx(2 * s["array"] * E) and e["dac"] == pytest.approx(2 * s["dac"] * E)
    t_ref = builtin_target("pcm")["cost"]["latency_per_mvm_ns"]
    assert m.mvm_latency_ns()["integration"] == pytest.approx(2 * (1 - phys.COST_LATENCY_ADC_SHARE) * t_ref)


def test_ideal_converters_are_costed_at_the_reference_bits():
    ideal = CostModel.from_target(builtin_target("ideal"))
    assert (ideal.dac_bits, ideal.adc_bits) == (8, 8)
    assert ideal.block_energy_pj(256, 256) == _with_bits(8, 8).block_energy_pj(256, 256)


def test_a_bigger_tile_in_a_user_target_costs_more_per_full_mvm(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text('base = "pcm"\n[tile]\nrows = 512\ncols = 512\n')
    target = load_target(str(f))
    E, s = target["cost"]["energy_per_mvm_pj"], phys.COST_ENERGY_SHARE
    full = sum(CostModel.from_target(target).block_energy_pj(512, 512).values())
    assert full == pytest.approx(E * (4 * s["array"] + 2 * (s["dac"] + s["adc"] + s["digital"])))


@pytest.mark.parametrize("text, message", [
    ("[cost]\nref_dac_bits = 0\n", "[cost].ref_dac_bits must be an integer in 2..16"),
    ("[cost]\nref_rows = -1\n", "[cost].ref_rows must be a positive integer"),
    ("[cost]\nref_adc_bits = 17\n", "[cost].ref_adc_bits must be an integer in 2..16"),
])
def test_reference_keys_validated(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(AcompileError, match=re.escape(message)):
        load_target(str(f))


# ---- every coefficient comes from constants.py ---------------------------------------------------------

def test_every_coefficient_is_in_constants_with_a_source():
    tree = ast.parse((ROOT / "compiler" / "cost.py").read_text())
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "phys"}
    assert {"COST_ENERGY_SHARE", "COST_LATENCY_ADC_SHARE", "COST_REF_ROWS"} <= used
    # no number of its own but unit-free ones of the formulas (powers of two, 1 - share, percent, tolerance)
    digits = {id(n.args[1]) for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "round" and len(n.args) == 2}  # round(x, 6): not a number
    numbers = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, (int, float))
               and not isinstance(n.value, bool) and id(n) not in digits}
    assert numbers <= {0, 1, 2, 100, 1e-9}, numbers
    lines = (ROOT / "runtime" / "physics" / "constants.py").read_text().splitlines()
    for name in sorted(used):
        assert hasattr(phys, name), name
        at = next(i for i, line in enumerate(lines) if re.match(rf"^{name}\b|^\w+, {name}\b", line))
        above = []
        i = at - 1
        while i >= 0 and (lines[i].startswith("#") or re.match(r"^[A-Z_]+( ?,|\s*=)", lines[i])):
            if lines[i].startswith("#"):
                above.append(lines[i])
            elif above:
                break
            i -= 1
        comment = " ".join(above)
        assert re.search(r"(19|20)\d\d|ASSUMPTION", comment), f"{name}: no source or ASSUMPTION: {comment!r}"


# ---- the report states it --------------------------------------------------------------------------------

def test_report_states_the_cost_model(reports):
    rep = reports[("resnet32-cifar10-plain.onnx", 128)]
    cm = rep["cost_model"]
    assert cm["energy_per_mvm_pj"] == 12483.0 and cm["latency_per_mvm_ns"] == 130.0  # backwards-compatible
    assert cm["reference"] == {"rows": 256, "cols": 256, "dac_bits": 8, "adc_bits": 8}
    assert cm["energy_share_at_reference"] == phys.COST_ENERGY_SHARE
    assert cm["adc_time_share"] == phys.COST_LATENCY_ADC_SHARE
    assert "assumption" in cm["assumption"] and "unused rows and columns" in cm["assumption"]
    md = to_markdown(rep)
    assert "## Cost model" in md and cm["assumption"] in md
    assert "energy / inference (uJ)" in md and "PWM integration" in md
    assert "Cost model" in to_html(rep)
    assert any("cost model: a full 128x128 MVM" in line for line in summary_lines(rep))


def test_reports_written_before_the_cost_model_still_render(reports):
    old = copy.deepcopy(reports[("lenet5-mnist.onnx", 256)])
    old["cost_model"] = {"energy_per_mvm_pj": 12483.0, "latency_per_mvm_ns": 130.0,
                         "assumption": "tiles of one layer run in parallel"}
    del old["totals"]["energy_breakdown_uj"]
    for ly in old["layers"]:
        ly.pop("energy_per_inference_uj", None)
        ly.pop("latency_per_inference_us", None)
    assert "12483.0 pJ per tile MVM" in to_markdown(old)
    assert to_html(old) and summary_lines(old)


# ---- the coefficients are [cost] keys of the target, each with its source ------------------------------

NEW_KEYS = {"share_array": phys.COST_ENERGY_SHARE["array"], "share_dac": phys.COST_ENERGY_SHARE["dac"],
            "share_adc": phys.COST_ENERGY_SHARE["adc"], "share_digital": phys.COST_ENERGY_SHARE["digital"],
            "adc_time_share": phys.COST_LATENCY_ADC_SHARE, "movement_pj_per_byte": phys.MOVEMENT_PJ_PER_BYTE}


@pytest.mark.parametrize("name", ["pcm", "hermes", "rram", "ideal"])
def test_builtin_cost_keys_are_the_constants_with_their_source(name):
    """Every built-in TOML writes each coefficient, equal to its documented default in constants.py, and
    each line carries (or sits under) a comment naming its source (a year) or saying it is an assumption."""
    assert {k: builtin_target(name)["cost"][k] for k in NEW_KEYS} == NEW_KEYS
    lines = (ROOT / "compiler" / "targets" / f"{name}.toml").read_text().splitlines()
    for key in NEW_KEYS:
        at = next(i for i, line in enumerate(lines) if re.match(rf"^{key}\s*=", line))
        comment = lines[at].partition("#")[2]
        i = at - 1
        while i >= 0 and lines[i].startswith("#"):  # the comment block right above the key
            comment += " " + lines[i]
            i -= 1
        assert re.search(r"(19|20)\d\d|assumption", comment, re.IGNORECASE), (name, key, comment)


def test_a_user_target_changing_the_shares_changes_the_energy_as_the_formula_says(tmp_path, reports):
    """Shares 40/5/45/10 % instead of 20/15/50/15 %: each term of the energy per inference scales by its
    share ratio (the blocks and MVM counts are the same), the total follows the closed form with the new
    shares, the latency does not move."""
    f = tmp_path / "shares.toml"
    f.write_text('base = "pcm"\n[cost]\nshare_array = 0.4\nshare_dac = 0.05\nshare_adc = 0.45\n'
                 "share_digital = 0.10\n")
    target = load_target(str(f))
    new = {"array": 0.4, "dac": 0.05, "adc": 0.45, "digital": 0.10}
    rep = map_model(model_path("lenet5-mnist.onnx"), target)[1]
    old = reports[("lenet5-mnist.onnx", 256)]
    for t in TERMS:
        assert rep["totals"]["energy_breakdown_uj"][t] == pytest.approx(
            old["totals"]["energy_breakdown_uj"][t] * new[t] / phys.COST_ENERGY_SHARE[t], rel=1e-6)
    # the closed form, written with the literal shares: mvms (a K N + d K ceil(N/C) + o N ceil(K/R))
    E = 12483.0
    a, d, o = 0.4 * E / 256 ** 2, 0.05 * E / 256, (0.45 + 0.10) * E / 256
    pj = sum(ly["mvms_per_inference"] * (a * K * N + d * K * math.ceil(N / 256) + o * N * math.ceil(K / 256))
             for ly in rep["layers"] if ly["analog"] for K, N in [ly["matrix"]])
    assert rep["totals"]["energy_per_inference_uj"] == pytest.approx(pj * 1e-6, rel=1e-6)
    assert rep["totals"]["energy_per_inference_uj"] != pytest.approx(old["totals"]["energy_per_inference_uj"])
    assert rep["totals"]["latency_per_inference_us"] == old["totals"]["latency_per_inference_us"]
    assert rep["cost_model"]["energy_share_at_reference"] == new
    assert "array 40 %, dac 5 %, adc 45 %, digital 10 %" in rep["cost_model"]["assumption"]
    # a full reference MVM still costs exactly the target's figure
    full = CostModel.from_target(target).block_energy_pj(256, 256)
    assert sum(full.values()) == pytest.approx(E, rel=1e-12)


def test_a_user_adc_time_share_changes_the_mvm_time_as_the_formula_says(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('base = "pcm"\n[periphery]\nadc_bits = 9\n[cost]\nadc_time_share = 0.25\n')
    m = CostModel.from_target(load_target(str(f)))
    lat = m.mvm_latency_ns()  # 8-bit DAC: the reference window; 9-bit ADC: twice the conversion time
    assert lat["integration"] == pytest.approx(0.75 * 130.0) and lat["adc_conversion"] == pytest.approx(
        2 * 0.25 * 130.0)
    assert lat["mvm"] == pytest.approx(130.0 * 1.25)


@pytest.mark.parametrize("text", [
    "[cost]\nshare_adc = 0.6\n",
    "[cost]\nshare_array = 0.0\n",
    "[cost]\nshare_array = 0.25\nshare_dac = 0.25\nshare_adc = 0.25\nshare_digital = 0.2\n",
])
def test_shares_not_summing_to_one_are_one_line_naming_the_keys(tmp_path, run_cli, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(AcompileError) as exc:
        load_target(str(f))
    msg = str(exc.value)
    assert "\n" not in msg and "must sum to 1" in msg
    assert all(k in msg for k in ("share_array", "share_dac", "share_adc", "share_digital")), msg
    code, out, err = run_cli("targets", f)
    assert code == 2 and err.count("\n") == 1 and err.startswith("acompile: error: ") and "share_adc" in err


@pytest.mark.parametrize("key, bad", [("share_adc", "1.5"), ("share_dac", "-0.1"), ("adc_time_share", "2"),
                                      ("movement_pj_per_byte", "-1.0"), ("share_array", '"half"')])
def test_cost_keys_are_validated(tmp_path, key, bad):
    f = tmp_path / "bad.toml"
    f.write_text(f"[cost]\n{key} = {bad}\n")
    with pytest.raises(AcompileError, match=re.escape(f"[cost].{key} must be")):
        load_target(str(f))


def test_a_target_stored_without_the_new_keys_costs_as_the_defaults(reports):
    """A model mapped by an older acompile stores a [cost] without share_* / adc_time_share /
    movement_pj_per_byte: the constants stand in, so it costs exactly as the built-in (and its stored
    report, which has no adc_time_share, still renders)."""
    pcm = builtin_target("pcm")
    old = copy.deepcopy(pcm)
    for k in NEW_KEYS:
        del old["cost"][k]
    a, b = CostModel.from_target(old), CostModel.from_target(pcm)
    assert a == b
    assert a.describe(256, 256) == b.describe(256, 256)
    rep = copy.deepcopy(reports[("lenet5-mnist.onnx", 256)])
    del rep["cost_model"]["adc_time_share"]
    assert "## Cost model" in to_markdown(rep) and to_html(rep) and summary_lines(rep)


def test_the_cost_model_refuses_shares_not_summing_to_one_from_any_source():
    """A target dict edited in code (not through a TOML file) is checked too."""
    t = copy.deepcopy(builtin_target("pcm"))
    t["cost"]["share_dac"] = 0.3
    with pytest.raises(AcompileError, match=r"share_dac \(0\.3\).*must sum to 1, got 1\.15"):
        CostModel.from_target(t)


def _matmul(tmp_path: Path, k: int, n: int) -> Path:
    """X[1, k] @ W[k, n] as an ONNX file."""
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
                          [numpy_helper.from_array(w, "w")])
    path = tmp_path / f"mm{k}x{n}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
