"""IR drop (runtime/physics/ir_drop.py): the exact nodal solver against hand-written 2x2 and 3x3 grids and
closed forms, the first-order approximation's error against the exact solver, and the emulator's use of it."""

from __future__ import annotations

import copy
import re as regex

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.targets import builtin_target, load_target
from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.evaluate import Emulator
from runtime.physics import constants as C
from runtime.physics.ir_drop import effective_conductance, solve_exact, tile_effective
from tests.test_runtime_handmap import hand_map

US = 1e-6


def _rel_out_err(approx: torch.Tensor, exact: torch.Tensor, seed: int = 0) -> float:
    """max |V @ approx - V @ exact| / max |V @ exact| over random inputs V in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.rand(256, exact.shape[0], generator=gen, dtype=torch.float64) * 2 - 1
    ref = v @ exact
    return float((v @ approx.double() - ref).abs().max() / ref.abs().max())


def test_exact_solver_matches_the_hand_written_2x2_grid():
    """2x2 grid, w = 1/r, driver voltages V0, V1 at the left of rows 0 and 1, ADCs (0 V) below row 1.
    Unknowns: row nodes U_ij, column nodes D_ij. Kirchhoff's current law at each node:

        U00: w(U00 - V0) + w(U00 - U01) + G00 (U00 - D00) = 0
        U01: w(U01 - U00)               + G01 (U01 - D01) = 0
        U10: w(U10 - V1) + w(U10 - U11) + G10 (U10 - D10) = 0
        U11: w(U11 - U10)               + G11 (U11 - D11) = 0
        D00: G00 (D00 - U00) + w(D00 - D10)               = 0
        D01: G01 (D01 - U01) + w(D01 - D11)               = 0
        D10: G10 (D10 - U10) + w(D10 - D00) + w(D10 - 0)  = 0
        D11: G11 (D11 - U11) + w(D11 - D01) + w(D11 - 0)  = 0

    and the ADCs read I0 = w D10, I1 = w D11. These eight equations, typed in here (not built by the
    module), are solved and compared with solve_exact; then two closed forms: a cell alone in the grid is
    G in series with its row path and its column path, and a 1x2 row is a ladder."""
    g = torch.tensor([[20.0, 5.0], [12.0, 25.0]], dtype=torch.float64)  # uS
    r = 2000.0  # ohm: a large r so the drop is ~10 %, far above solver round-off
    w = 1.0 / r
    (g00, g01), (g10, g11) = (g * US).tolist()
    v0, v1 = 0.3, -0.2
    # columns: U00 U01 U10 U11 D00 D01 D10 D11
    a = np.array([
        [2 * w + g00, -w, 0, 0, -g00, 0, 0, 0],
        [-w, w + g01, 0, 0, 0, -g01, 0, 0],
        [0, 0, 2 * w + g10, -w, 0, 0, -g10, 0],
        [0, 0, -w, w + g11, 0, 0, 0, -g11],
        [-g00, 0, 0, 0, g00 + w, 0, -w, 0],
        [0, -g01, 0, 0, 0, g01 + w, 0, -w],
        [0, 0, -g10, 0, -w, 0, g10 + 2 * w, 0],
        [0, 0, 0, -g11, 0, -w, 0, g11 + 2 * w],
    ])
    b = np.array([w * v0, 0, w * v1, 0, 0, 0, 0, 0])
    x = np.linalg.solve(a, b)
    hand = np.array([w * x[6], w * x[7]]) / US  # uA per V x uS units: same as V @ G_eff
    got = solve_exact(g, r, v=torch.tensor([[v0, v1]], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(got, hand, rtol=1e-10)
    assert abs(got[0] - (v0 * 20 + v1 * 12)) > 0.01 * abs(v0 * 20 + v1 * 12)  # the drop is visible
    # a cell alone: cell (0, 0) sees 1 row segment and 2 column segments, I = V / (1/G + 3 r)
    alone = torch.zeros(2, 2, dtype=torch.float64)
    alone[0, 0] = 20.0
    ge = solve_exact(alone, r)
    assert float(ge[0, 0]) == pytest.approx(1 / (1 / (20 * US) + 3 * r) / US, rel=1e-10)
    assert float(effective_conductance(alone, r)[0, 0]) == pytest.approx(float(ge[0, 0]), rel=1e-10)
    # a 1x2 row: h_j = G_j / (1 + r G_j) (cell + one column segment), U1 = U0 / (1 + r h1),
    # U0 = V / (1 + r h0 + r h1 / (1 + r h1)); I_j = h_j U_j
    row = torch.tensor([[20.0, 5.0]], dtype=torch.float64)
    h0, h1 = (row[0] * US / (1 + r * row[0] * US)).tolist()
    u0 = 1.0 / (1 + r * h0 + r * h1 / (1 + r * h1))
    u1 = u0 / (1 + r * h1)
    np.testing.assert_allclose(solve_exact(row, r)[0].numpy(), np.array([h0 * u0, h1 * u1]) / US,
                               rtol=1e-10)


#: Kirchhoff's current law at the 18 nodes of a 3x3 grid (w = 1/r, the wire conductance of one segment;
#: Gij the cell conductance; V0..V2 the row drivers at the left end; "0" the ADCs' virtual ground below
#: row 2). Each term k(A - B) is the current from node A to node B through conductance k.
KCL_3X3 = (
    "U00: w(U00 - V0) + w(U00 - U01) + G00(U00 - D00) = 0",
    "U01: w(U01 - U00) + w(U01 - U02) + G01(U01 - D01) = 0",
    "U02: w(U02 - U01) + G02(U02 - D02) = 0",
    "U10: w(U10 - V1) + w(U10 - U11) + G10(U10 - D10) = 0",
    "U11: w(U11 - U10) + w(U11 - U12) + G11(U11 - D11) = 0",
    "U12: w(U12 - U11) + G12(U12 - D12) = 0",
    "U20: w(U20 - V2) + w(U20 - U21) + G20(U20 - D20) = 0",
    "U21: w(U21 - U20) + w(U21 - U22) + G21(U21 - D21) = 0",
    "U22: w(U22 - U21) + G22(U22 - D22) = 0",
    "D00: G00(D00 - U00) + w(D00 - D10) = 0",
    "D01: G01(D01 - U01) + w(D01 - D11) = 0",
    "D02: G02(D02 - U02) + w(D02 - D12) = 0",
    "D10: G10(D10 - U10) + w(D10 - D00) + w(D10 - D20) = 0",
    "D11: G11(D11 - U11) + w(D11 - D01) + w(D11 - D21) = 0",
    "D12: G12(D12 - U12) + w(D12 - D02) + w(D12 - D22) = 0",
    "D20: G20(D20 - U20) + w(D20 - D10) + w(D20 - 0) = 0",
    "D21: G21(D21 - U21) + w(D21 - D11) + w(D21 - 0) = 0",
    "D22: G22(D22 - U22) + w(D22 - D12) + w(D22 - 0) = 0",
)
#: the ADC of column j reads the current of the last column segment: I_j = w (D2j - 0)
ADC_3X3 = ("w(D20 - 0)", "w(D21 - 0)", "w(D22 - 0)")
_TERM = regex.compile(r"(\w+)\((\w+) - (\w+)\)")


def _hand_3x3(g: np.ndarray, r: float, v: np.ndarray, wire_factor: float = 1.0) -> np.ndarray:
    """Column currents (uA, i.e. V x uS) of the 3x3 grid for inputs v [B, 3] (V), from KCL_3X3 alone:
    the 18 x 18 conductance matrix is filled entry by entry from the written terms (k(A - B) adds k at
    (A, A) and -k at (A, B), or k B to the right-hand side when B is a driver or ground), then solved with
    numpy. `wire_factor` scales w (to show that a wrong wire conductance is caught)."""
    coef = {"w": wire_factor / r, **{f"G{i}{j}": g[i, j] * US for i in range(3) for j in range(3)}}
    nodes = [eq.split(":")[0] for eq in KCL_3X3]
    assert len(nodes) == 18 and len(set(nodes)) == 18
    at = {name: k for k, name in enumerate(nodes)}
    a = np.zeros((18, 18))
    b = np.zeros((18, len(v)))
    for eq in KCL_3X3:
        node, rest = eq.split(":")
        lhs, rhs = rest.split("=")
        assert rhs.strip() == "0"
        terms = _TERM.findall(lhs)
        assert len(terms) == lhs.count("(") >= 2, eq  # every term parsed
        for k, x, y in terms:
            assert x == node, eq  # KCL at `node`: every current leaves it
            a[at[node], at[node]] += coef[k]
            if y in at:
                a[at[node], at[y]] -= coef[k]
            elif y != "0":  # a driver V_i: known, to the right-hand side
                b[at[node]] += coef[k] * v[:, int(y[1:])]
    x = np.linalg.solve(a, b)  # [18, B]
    out = []
    for term in ADC_3X3:
        (k, node, ground), = _TERM.findall(term)
        assert ground == "0"
        out.append(coef[k] * x[at[node]])
    return np.stack(out, axis=1) / US  # [B, 3]


def test_exact_solver_matches_the_hand_written_3x3_grid():
    """The 18 node equations of a 3x3 grid, written out in KCL_3X3 (not built by the module), solved with
    numpy, against solve_exact to 1e-10: the column currents for random inputs and the whole effective
    conductance matrix (inputs = the unit vectors). A solver whose wire conductance were off by a factor
    (even 1 + 1e-6) would fail: the hand solution moves by far more than the tolerance."""
    g = np.array([[20.0, 5.0, 13.0], [12.0, 25.0, 0.5], [7.0, 18.0, 22.0]])  # uS
    r = 2000.0  # ohm: drop of several %, far above round-off
    v = np.array([[0.3, -0.2, 0.1], [1.0, 1.0, 1.0], [-0.4, 0.0, 0.25]])
    hand = _hand_3x3(g, r, v)
    got = solve_exact(torch.from_numpy(g), r, v=torch.from_numpy(v))
    np.testing.assert_allclose(got.numpy(), hand, rtol=1e-10, atol=0)
    g_eff = _hand_3x3(g, r, np.eye(3))
    np.testing.assert_allclose(solve_exact(torch.from_numpy(g), r).numpy(), g_eff, rtol=1e-10, atol=0)
    # the drop is visible: every effective conductance below its cell's, by up to ~20 %
    drop = 1 - g_eff / g
    assert drop.min() > 0 and drop.max() > 0.1
    # the comparison sees a wrong wire conductance: w off by 1e-6 moves the currents by > 1e-8 relative
    for factor in (1 + 1e-6, 2.0):
        off = _hand_3x3(g, r, v, wire_factor=factor)
        assert np.abs(off / hand - 1).max() > 100 * 1e-10, factor


def test_no_wire_resistance_is_the_ideal_crossbar():
    g = torch.rand(5, 4, dtype=torch.float64) * 25
    assert torch.equal(solve_exact(g, 0.0), g)
    assert effective_conductance(g, 0.0) is g
    # tiny r: the exact solution tends to G
    torch.testing.assert_close(solve_exact(g, 1e-6), g, rtol=1e-9, atol=1e-9)


def _grid(m: int, sparse: bool, seed: int) -> torch.Tensor:
    """Conductances (uS) of one sign's array: uniform in [0, 25] (dense, the worst case), or the
    layer-like case: half the cells at 0 (the unused device of a pair), the rest |w| well below g_max."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand(m, m, generator=gen, dtype=torch.float64) * C.PCM_G_MAX
    if sparse:
        g = g * (torch.rand(m, m, generator=gen, dtype=torch.float64) < 0.5) * 0.4
    return g


@pytest.mark.parametrize("m", [2, 3, 16, 32])
def test_first_order_error_at_the_published_wire_resistance(m):
    """r = 0.35 ohm (aihwkit) on small arrays: the approximation matches the exact grid to < 1e-5 of the
    largest output (measured: 1.9e-6 at 32x32 dense, where ignoring the drop is off by 3.8e-3)."""
    for seed in range(3):
        g = _grid(m, sparse=False, seed=seed)
        ex = solve_exact(g, C.AIHWKIT_R_WIRE)
        assert _rel_out_err(effective_conductance(g, C.AIHWKIT_R_WIRE), ex, seed) < 1e-5


@pytest.mark.parametrize("m", [16, 32])
@pytest.mark.parametrize("tile,sparse,bound", [
    (256, True, 2e-3), (256, False, 2e-2), (512, True, 2e-2), (1024, True, 1e-1)])
def test_first_order_error_at_the_drop_of_large_tiles(m, tile, sparse, bound):
    """The drop grows as r G N^2: an m x m array with r scaled by (tile / m)^2 has the drop of a tile x tile
    array at 0.35 ohm. Asserted bounds on max |output error| / max |output| (measured, 16 and 32 rows):
    256 layer-like 5-7e-4, 256 dense 6-8e-3, 512 layer-like 6-9e-3, 1024 layer-like 5-7e-2 -- and always at
    most a tenth of the error of ignoring the drop (5-6 %, 22-25 %, 20-25 %, 78-91 %)."""
    r = C.AIHWKIT_R_WIRE * (tile / m) ** 2
    for seed in range(2):
        g = _grid(m, sparse, seed)
        ex = solve_exact(g, r)
        err = _rel_out_err(effective_conductance(g, r), ex, seed)
        assert err < bound
        assert err < 0.1 * _rel_out_err(g, ex, seed)


def test_tile_effective_treats_each_tile_alone():
    g = torch.rand(2, 7, 5) * 25  # a leading dim (e.g. chips) is kept
    rb, cb = [(0, 4), (4, 7)], [(0, 3), (3, 5)]
    out = tile_effective(g, 50.0, rb, cb)
    for rs, re in rb:
        for cs, ce in cb:
            torch.testing.assert_close(out[:, rs:re, cs:ce], effective_conductance(g[:, rs:re, cs:ce], 50.0))
    assert tile_effective(g, 0.0, rb, cb) is g


# ---- the emulator ------------------------------------------------------------------------------------

def _gemm(k: int = 40, n: int = 12, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_emulator_applies_the_approximation_per_tile():
    """Ideal device and converters, r_wire > 0: the layer computes x @ W_eff + B with W_eff from the
    approximation applied by hand to each tile's G+ and G- (16 x 5 tiles: 3 row x 3 column blocks)."""
    model = _gemm()
    t = copy.deepcopy(builtin_target("ideal"))
    t["tile"]["r_wire"] = 2000.0  # large, so the effect is far above float32 round-off
    mapped = hand_map(model, t, tile=(16, 5))
    s = AnalogSettings.from_target(t)
    assert s.r_wire == 2000.0 and not s.exact
    emu = Emulator(mapped, s)
    layer = emu.layers[0]
    layer.program(None)
    w = torch.from_numpy(numpy_helper.to_array(model.graph.initializer[0]).copy())
    b = torch.from_numpy(numpy_helper.to_array(model.graph.initializer[1]).copy())
    gs = t["device"]["g_max"] / w.abs().max()  # per-layer conductance scale (uS per weight unit)
    rb = [(0, 16), (16, 32), (32, 40)]
    cb = [(0, 5), (5, 10), (10, 12)]
    gp = tile_effective(gs * w.clamp(min=0), 2000.0, rb, cb)
    gm = tile_effective(gs * (-w).clamp(min=0), 2000.0, rb, cb)
    w_eff = (gp - gm) / gs
    x = torch.randn(32, 40, generator=torch.Generator().manual_seed(1))
    y = emu.executor(x)
    torch.testing.assert_close(y, x @ w_eff + b, rtol=1e-4, atol=1e-4)
    assert (y - (x @ w + b)).abs().max() > 1e-2  # and it differs from the exact layer


def test_zero_wire_resistance_is_bit_identical():
    """r_wire = 0 (the built-in default) gives the very numbers of settings without the key."""
    model = _gemm(k=60)
    t = copy.deepcopy(builtin_target("pcm"))
    assert t["tile"]["r_wire"] == 0.0
    mapped = hand_map(model, t, tile=(32, 8))
    x = torch.randn(16, 60, generator=torch.Generator().manual_seed(2))
    outs = []
    for target in (t, {**t, "tile": {k: v for k, v in t["tile"].items() if k != "r_wire"}}):
        emu = Emulator(mapped, AnalogSettings.from_target(target))
        ly = emu.layers[0]
        ly.program(torch.Generator().manual_seed(0))
        ly.set_time(86400.0, torch.Generator().manual_seed(1))
        ly.generator = torch.Generator().manual_seed(3)
        outs.append(emu.executor(x))
    assert torch.equal(outs[0], outs[1])
    emu = Emulator(mapped, AnalogSettings.from_target(t, r_wire=C.AIHWKIT_R_WIRE * 1e3))
    ly = emu.layers[0]
    ly.program(torch.Generator().manual_seed(0))
    ly.set_time(86400.0, torch.Generator().manual_seed(1))
    ly.generator = torch.Generator().manual_seed(3)
    assert not torch.equal(emu.executor(x), outs[0])


def test_r_wire_is_validated(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text("base = \"pcm\"\n[tile]\nr_wire = 0.35\n")
    assert load_target(str(p))["tile"]["r_wire"] == 0.35
    for bad in ("-1.0", "\"high\"", "true", "inf"):
        p.write_text(f"base = \"pcm\"\n[tile]\nr_wire = {bad}\n")
        with pytest.raises(AcompileError, match=r"\[tile\]\.r_wire must be a non-negative number"):
            load_target(str(p))
    for name in ("pcm", "hermes", "rram", "ideal"):
        assert builtin_target(name)["tile"]["r_wire"] == 0.0
    with pytest.raises(AcompileError, match="r_wire"):
        AnalogSettings.from_target(builtin_target("pcm"), r_wire=-1.0)


def test_eval_r_wire_flag_is_checked():
    from click.testing import CliRunner

    from runtime.cli import eval_cmd

    r = CliRunner().invoke(eval_cmd, ["missing.pcm.onnx", "--r-wire", "-2"])
    assert isinstance(r.exception, AcompileError) and "--r-wire must be a non-negative" in str(r.exception)


def test_eval_r_wire_flag_reaches_the_tiles(tmp_path):
    """`acompile eval --r-wire OHM` overrides the target's [tile] r_wire (recorded in the JSON settings)."""
    import json

    from click.testing import CliRunner

    from runtime.cli import eval_cmd
    from tests.test_runtime_analog import _conv_bn_model

    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), y=rng.integers(0, 10, 40))
    path = tmp_path / "m.pcm.onnx"
    onnx.save(hand_map(_conv_bn_model(), "pcm", tile=(16, 8)), path)
    base = ["--data", str(npz), "--times", "1s", "--chips", "1", "--compensation", "none", "--quiet",
            "--calib", "16", "--no-baseline", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
    for r in ("0", "2000"):
        out = tmp_path / f"{r}.json"
        res = CliRunner().invoke(eval_cmd, [str(path), *base, "--r-wire", r, "--json", str(out)])
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["settings"]["r_wire"] == float(r)
