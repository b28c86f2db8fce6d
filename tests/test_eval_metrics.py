"""`acompile eval --metric agreement | rel-error`: fidelity to the digital model, no labels needed.

agreement = share of samples whose top-1 equals the digital model's (onnxruntime on the model rebuilt
from the mapped artifact); rel-error = ||y - y_ref||_2 / ||y_ref||_2 over every sample and element.
Checked on the bundled MLP (uint8 images, x-only .npz) and a hand-built regression Gemm (float inputs,
real-valued outputs, x-only .npz).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import DATA_DIR, model_path

MLP = model_path("mlp-mnist.onnx")
MNIST_1K = DATA_DIR / "mnist-test-1k.npz"
N = 200
YEAR = 365 * 86400.0


def _regression_onnx(path: Path) -> Path:
    """y = x @ W + b: a Gemm with real-valued outputs and no softmax (16 inputs, 6 outputs)."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.3, (16, 6)).astype(np.float32)
    b = rng.normal(0, 0.1, 6).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")], "regress",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Mapped MLP and regression model on ideal and pcm, and their x-only .npz files."""
    from compiler.pipeline import map_model
    from compiler.targets import load_target

    tmp = tmp_path_factory.mktemp("metrics")
    with np.load(MNIST_1K) as d:
        np.savez(tmp / "mnist-x.npz", x=d["x"][:N])
    rng = np.random.default_rng(3)
    np.savez(tmp / "reg-x.npz", x=rng.normal(0, 1, (N, 16)).astype(np.float32))
    reg = _regression_onnx(tmp / "regress.onnx")
    out = {"tmp": tmp}
    for name, src in (("mlp", MLP), ("reg", reg)):
        for target in ("ideal", "pcm"):
            mapped, _ = map_model(src, load_target(target))
            path = tmp / f"{name}.{target}.onnx"
            onnx.save(mapped, str(path))
            out[name, target] = path
    out["mlp", "npz"] = tmp / "mnist-x.npz"
    out["reg", "npz"] = tmp / "reg-x.npz"
    return out


def _cfg(data: Path | str, metric: str, times=(YEAR,), comp=("none",), chips: int = 2, **kw):
    from runtime.evaluate import EvalConfig

    return EvalConfig(data=str(data), times=list(times), chips=chips, compensation=list(comp), threads=1,
                      metric=metric, **kw)


def _values(result: dict) -> dict[tuple[str, str], float]:
    return {(r["time"], r["compensation"]): r["mean"] for r in result["results"]}


@pytest.mark.parametrize("name", ["mlp", "reg"])
def test_ideal_target_is_the_digital_model(setup, name):
    from runtime.evaluate import evaluate

    for metric, check in (("agreement", lambda v: v == 1.0), ("rel-error", lambda v: 0.0 <= v < 1e-5)):
        res = evaluate(setup[name, "ideal"], _cfg(setup[name, "npz"], metric, times=(0.0, YEAR),
                                                   comp=("none", "global")), progress=False)
        assert res["metric"] == metric
        assert res["n_images"] == N
        assert res["calibration"]["source"].startswith("the .npz's x")
        assert res["baseline"]["value"] == (1.0 if metric == "agreement" else 0.0)
        assert res["baseline"]["trivial"] is True
        for row in res["results"]:
            assert all(check(v) for v in row["accuracies"]), (metric, row)


@pytest.mark.parametrize("name", ["mlp", "reg"])
def test_pcm_one_year_degrades_and_global_helps(setup, name):
    from runtime.evaluate import evaluate

    vals = {}
    for metric in ("agreement", "rel-error"):
        res = evaluate(setup[name, "pcm"], _cfg(setup[name, "npz"], metric, comp=("none", "global"), chips=3),
                       progress=False)
        vals[metric] = _values(res)
    agree, err = vals["agreement"], vals["rel-error"]
    assert err["1y", "none"] > 0.0
    assert err["1y", "global"] < err["1y", "none"]
    assert agree["1y", "none"] < 1.0
    if name == "mlp":  # a regression head's argmax means little; a global gain barely moves it
        assert agree["1y", "global"] > agree["1y", "none"]


def test_agreement_and_rel_error_by_hand(setup):
    """One chip, one batch: the emulator's outputs and onnxruntime's, compared in numpy."""
    import torch

    from runtime.baseline import OrtBaseline
    from runtime.evaluate import make_generator, open_session, run_chip

    path = setup["mlp", "pcm"]
    cfg = _cfg(setup["mlp", "npz"], "agreement", times=(YEAR,), comp=("none",), chips=1, batch_size=N)
    s = open_session(path, cfg, progress=False)
    got = run_chip(s, 0)[0]

    emu = s.emu
    emu.program(cfg.seed, 0, s.xc[: cfg.dac_calib_images], s.batch_size)
    emu.set_time(YEAR, cfg.seed, 0, 0)
    gen = make_generator(emu.device, cfg.seed, 0, 2, 0, 0)
    emu.compensate("none", s.xc[: cfg.calib], s.batch_size, gen)
    emu._set_generator(gen)
    with torch.no_grad():
        y = emu.run(s.x).detach().cpu().numpy().astype(np.float64)
    ref = OrtBaseline(s.model)(s.x).astype(np.float64)
    assert np.array_equal(ref, s.ref.astype(np.float64))
    hand = float(np.mean(y.argmax(1) == ref.argmax(1)))
    assert 0.5 < hand < 1.0
    assert got == hand

    cfg.metric = "rel-error"
    s2 = open_session(path, cfg, progress=False)
    got_err = run_chip(s2, 0)[0]
    assert got_err == pytest.approx(np.linalg.norm(y - ref) / np.linalg.norm(ref), rel=1e-9)


def test_accuracy_unchanged(setup, tmp_path, run_cli):
    """--metric accuracy is today's eval: same JSON numbers as a run without --metric."""
    mapped = setup["mlp", "pcm"]
    common = ["eval", mapped, "--data", MNIST_1K, "--limit", "150", "--chips", "2", "--times", "1d,1y",
              "--compensation", "none,global", "--threads", "1", "--quiet"]
    code, out_a, err = run_cli(*common, "--json", tmp_path / "a.json")
    assert code == 0, err
    code, out_b, err = run_cli(*common, "--metric", "accuracy", "--json", tmp_path / "b.json")
    assert code == 0, err
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["metric"] == b["metric"] == "accuracy"
    assert a["results"] == b["results"]
    assert a["baseline"]["accuracy"] == b["baseline"]["accuracy"]
    assert "accuracy %" in out_a and "accuracy %" in out_b


def test_cli_outputs_follow_the_metric(setup, tmp_path, run_cli):
    from runtime.plots import plot_retention

    code, out, err = run_cli("eval", setup["reg", "pcm"], "--data", setup["reg", "npz"], "--chips", "2",
                             "--times", "1d,1y", "--compensation", "none,global", "--metric", "rel-error",
                             "--threads", "1", "--quiet", "--json", tmp_path / "r.json", "--csv",
                             tmp_path / "r.csv")
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["metric"] == "rel-error"
    assert "relative L2 error" in out and "lower is better" in out
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[1].split(",")[6] == "0.0" and rows[1].endswith("rel-error")
    buf = io.BytesIO()
    plot_retention(res, buf, fmt="svg")
    assert b"relative L2 error" in buf.getvalue()


@pytest.mark.parametrize("args, message", [
    (["--metric", "bogus"], "--metric"),
    (["--balanced", "--metric", "agreement"], "--balanced"),
    (["--metric", "accuracy"], "no labels"),
    ([], "no labels"),
])
def test_bad_metric_options_are_one_line_errors(setup, run_cli, args, message):
    code, out, err = run_cli("eval", setup["mlp", "pcm"], "--data", setup["mlp", "npz"], "--chips", "1",
                             "--times", "1d", "--quiet", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acompile: error:") and message in lines[0], err


def test_explore_passes_the_metric_through(setup, tmp_path):
    """`acompile explore --metric agreement` on an x-only .npz: a variant's numbers are eval's."""
    from runtime.evaluate import evaluate
    from runtime.explore import table
    from runtime.explore_cli import run_explore

    summary = run_explore(MLP, sets=["adc_bits=6,8"], out_dir=tmp_path / "x", data=str(setup["mlp", "npz"]),
                          times=[YEAR], chips=2, compensation=["none"], metric="agreement", threads=1,
                          quiet=True)
    assert summary["config"]["metric"] == "agreement" and summary["baseline"] == 1.0
    assert "top-1 agreement" in table(summary)
    assert (tmp_path / "x" / "summary.png").is_file()
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime.explore_cli import parse_sets, resolve_knobs, variant_target

    base = load_target("pcm")
    knobs = resolve_knobs(base, parse_sets(["adc_bits=8"]))
    mapped, _ = map_model(MLP, variant_target(base, knobs, (8,)))
    res = evaluate(mapped, _cfg(setup["mlp", "npz"], "agreement", chips=2), progress=False)
    row = next(v for v in summary["variants"] if v["knobs"]["adc_bits"] == 8)["results"][0]
    assert row["accuracies"] == res["results"][0]["accuracies"]
