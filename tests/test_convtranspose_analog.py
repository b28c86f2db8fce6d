"""Analog ConvTranspose (issue 11): ONNX ConvTranspose with a constant weight maps onto crossbar tiles as
`ai.acompile::AnalogConvTranspose`.

Formulation (CONTRACTS §3): the equivalent conv over the zero-upsampled input with the flipped kernel,
so W = [C_in * prod(k), C_out] (rows = the fan-in of one output position, cols = C_out) and the DAC /
row-block ADC / output noise / compensation path is the one of AnalogConv. Checked: the ideal target is
onnxruntime on the original model (strides, pads, output_padding, dilations, bias, a DCGAN-like
generator), pcm degrades with time, grouped stays digital, row blocks of a 64-row tile split correctly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


def _export(model, x, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _map(src: Path, target: str = "ideal", tile: tuple[int, int] | None = None):
    from compiler.pipeline import map_model
    from compiler.targets import load_target, with_overrides

    return map_model(src, with_overrides(load_target(target), tile=tile))


def _emulate(mapped: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from runtime.executor import Executor

    return Executor(mapped)(torch.from_numpy(x)).numpy()


class _Gen(nn.Module):
    """DCGAN-like generator: Linear -> reshape -> ConvTranspose x2."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 32 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1, bias=False)

    def forward(self, z):
        h = torch.relu(self.fc(z)).reshape(-1, 32, 4, 4)
        return torch.tanh(self.up2(torch.relu(self.up1(h))))


CASES = {  # C_in, C_out, kernel, stride, padding, output_padding, dilation, bias
    "s1": (3, 5, 3, 1, 0, 0, 1, True),
    "s1-pad": (4, 6, 3, 1, 1, 0, 1, False),
    "s2": (4, 3, 3, 2, 0, 0, 1, True),
    "s2-pad-outpad": (5, 4, 3, 2, 1, 1, 1, True),
    "s2-rect": (4, 2, (3, 2), (2, 1), (1, 0), (1, 0), 1, False),
    "dilation": (3, 4, 3, 2, 2, 1, 2, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ideal_is_onnxruntime_on_the_original(tmp_path, case):
    from runtime import contract
    from runtime.baseline import reconstruct

    cin, cout, k, s, p, op, d, bias = CASES[case]
    torch.manual_seed(0)
    m = nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op, dilation=d, bias=bias)
    x = torch.randn(2, cin, 7, 6)
    src = _export(m, x, tmp_path / "ct.onnx")
    mapped, report = _map(src)
    (ly,) = report["layers"]
    assert ly["op"] == "ConvTranspose" and ly["analog"] and ly["reason"] == "analog-eligible"
    kk = int(np.prod(m.kernel_size))
    assert ly["matrix"] == [cin * kk, cout]
    with torch.no_grad():
        want = m(x).numpy()
    assert ly["mvms_per_inference"] == int(np.prod(want.shape[2:]))
    (a,) = contract.check_mapped(mapped)
    assert a.op_type == contract.ANALOG_CONV_TRANSPOSE and a.orig_op == "ConvTranspose"
    xn = x.numpy()
    ref = _ort(src, xn)
    np.testing.assert_allclose(ref, want, atol=1e-5)
    np.testing.assert_allclose(_emulate(mapped, xn), ref, atol=1e-4)
    rebuilt = tmp_path / "rebuilt.onnx"
    onnx.save(reconstruct(mapped), str(rebuilt))
    np.testing.assert_allclose(_ort(rebuilt, xn), ref, atol=1e-5)


def test_dcgan_generator_maps_and_matches(tmp_path):
    torch.manual_seed(1)
    g = _Gen()
    z = torch.randn(4, 16)
    src = _export(g, z, tmp_path / "gen.onnx")
    mapped, report = _map(src)
    layers = {ly["op"]: ly for ly in report["layers"]}
    cts = [ly for ly in report["layers"] if ly["op"] == "ConvTranspose"]
    assert len(cts) == 2 and all(ly["analog"] for ly in cts)
    assert layers["Gemm"]["analog"]
    assert [ly["mvms_per_inference"] for ly in cts] == [8 * 8, 16 * 16]
    assert report["eval_supported"]
    zn = z.numpy()
    np.testing.assert_allclose(_emulate(mapped, zn), _ort(src, zn), atol=1e-4)


def test_pcm_differs_and_drifts(tmp_path):
    from runtime.evaluate import EvalConfig, evaluate

    torch.manual_seed(1)
    src = _export(_Gen(), torch.randn(1, 16), tmp_path / "gen.onnx")
    mapped, _ = _map(src, "pcm")
    path = tmp_path / "gen.pcm.onnx"
    onnx.save(mapped, str(path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "z.npz", x=rng.normal(0, 1, (64, 16)).astype(np.float32))
    year = 365 * 86400.0
    cfg = EvalConfig(data=str(tmp_path / "z.npz"), times=[1.0, year], chips=2, compensation=["none"],
                     threads=1, metric="rel-error", calib=64, dac_calib_images=64)
    res = evaluate(path, cfg, progress=False)
    vals = {r["t"]: r["mean"] for r in res["results"]}
    assert 0.0 < vals[1.0] < 0.3, vals  # about what an AnalogConv generator of this size shows
    assert vals[year] > 2 * vals[1.0], vals


def test_grouped_conv_transpose_is_digital(tmp_path):
    torch.manual_seed(0)
    m = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    x = torch.randn(1, 4, 5, 5)
    src = _export(m, x, tmp_path / "g.onnx")
    mapped, report = _map(src)
    (ly,) = report["layers"]
    assert not ly["analog"] and "grouped conv transpose (group=2)" in ly["reason"]
    assert "grouped_conv=digital" in ly["reason"]
    assert ly["matrix"] == [2 * 9, 3]
    np.testing.assert_allclose(_emulate(mapped, x.numpy()), _ort(src, x.numpy()), atol=1e-5)


def test_row_blocks_split_many_input_channels(tmp_path):
    """C_in = 300 > 256 with 64-row tiles: row blocks straddle input channels; the blocks' partial
    sums add up to the whole transposed conv, and the ideal target stays exact through eval."""
    from runtime.evaluate import EvalConfig, evaluate
    from runtime.tile_geometry import TileGeometry

    torch.manual_seed(2)
    m = nn.ConvTranspose2d(300, 8, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(2, 300, 4, 4)
    src = _export(m, x, tmp_path / "wide.onnx")
    mapped, report = _map(src, tile=(64, 64))
    (ly,) = report["layers"]
    assert ly["analog"] and ly["matrix"] == [2700, 8] and ly["blocks"] == -(-2700 // 64)
    np.testing.assert_allclose(_emulate(mapped, x.numpy()), _ort(src, x.numpy()), atol=1e-4)

    from runtime import contract

    (a,) = contract.analog_nodes(mapped)
    w = torch.from_numpy(np.array(a.W))
    geo = TileGeometry.split("wide", 2700, 8, 64, 64, kernel=a.kernel_shape, strides=a.strides, pads=a.pads,
                             dilations=a.dilations, output_padding=a.output_padding, transposed=True)
    assert len(geo.row_blocks) == 43
    total = None
    for rs, re in geo.row_blocks:
        sl = geo.block_span(rs, re)[2]
        y = geo.apply(geo.block_input(x, sl), geo.kernel(geo.block_matrix(w, rs, re)))
        total = y if total is None else total + y
    with torch.no_grad():
        want = m(x) - m.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(total, want, atol=1e-4, rtol=1e-4)

    path = tmp_path / "wide.ideal.onnx"
    onnx.save(mapped, str(path))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(0, 1, (8, 300, 4, 4)).astype(np.float32))
    cfg = EvalConfig(data=str(tmp_path / "x.npz"), times=[1.0], chips=1, compensation=["none"], threads=1,
                     metric="rel-error", calib=8, dac_calib_images=8)
    res = evaluate(path, cfg, progress=False)
    assert all(r["mean"] < 1e-5 for r in res["results"]), res["results"]


def test_finetune_trains_conv_transpose_digitally(tmp_path):
    """HWA fine-tuning keeps ConvTranspose digital (its weight layout differs from the Conv geometry the
    HWA layers build from the original weight); the Gemm before it trains hardware-aware."""
    from compiler.targets import load_target
    from hwtrain.finetune import prepare

    torch.manual_seed(1)
    src = _export(_Gen(), torch.randn(1, 16), tmp_path / "gen.onnx")
    p = prepare(src, load_target("pcm"), mean=[0.0], std=[1.0])
    assert [ly.name for ly in p.layers] == ["/fc/Gemm"]
    assert tuple(p.module(torch.randn(2, 16)).shape) == (2, 3, 16, 16)
