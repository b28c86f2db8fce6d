"""Replicated small layers (target [mapping] replicate = "free-rows"): copies of a layer's matrix in the
rows its tile leaves free, driven with the same inputs, their column currents summed.

What must hold: the compiler gives each layer as many copies as fit its one tile and records them
(contract `replicas`, report, placement); the emulator programs every copy's devices independently, so
the programming noise of the mean weight is the single-copy noise / sqrt(replicas) (DESIGN §6 formula,
measured); the periphery reads the summed current re-ranged by the number of copies, so the ADC bound
and the output noise (a fraction of the output range) per mean weight are those of one copy; noise off,
the replicated layer computes the original one; fine-tuning sees the same.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.pipeline import map_model
from compiler.targets import builtin_target, load_target
from compiler.tiling import check_no_overlap, place_packed, replicas_for, split
from runtime import contract
from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.evaluate import Emulator
from runtime.physics.periphery import quantize
from runtime.tile_state import ProgrammedTile

G_MAX = 25.0


def _sigma_prog(x: float) -> float:
    """uS at normalized target conductance x (Nandakumar 2019, DESIGN §6)."""
    return max(-1.1731 * x * x + 1.9650 * x + 0.26348, 0.0)


def _net(path) -> None:
    """conv 3 -> 16 (27 rows), conv 16 -> 16 (144 rows), global pool, Gemm 16 -> 10 (16 rows)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (16, 16, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (10, 16)).astype(np.float32)
    b3 = rng.normal(0, 0.1, 10).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("Conv", ["ar", "w2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"),
                                                                       (b3, "b3"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key=contract.META_PREPROCESSING,
                         value='{"layout": "NCHW", "scale": 1.0, "mean": [0.0], "std": [1.0], '
                               '"input_shape": [3, 8, 8]}')
    onnx.save(m, str(path))


def _pcm(replicate: str = "free-rows", **periphery) -> dict:
    t = copy.deepcopy(builtin_target("pcm"))
    t["mapping"]["replicate"] = replicate
    t["periphery"].update(periphery)
    return t


def _replicas(mapped: onnx.ModelProto) -> dict[str, int]:
    return {a.layer: a.replicas for a in contract.analog_nodes(mapped, load=False)}


@pytest.mark.parametrize("pack", [False, True])
def test_free_rows_fill_each_small_layers_tile(tmp_path, pack):
    src = tmp_path / "m.onnx"
    _net(src)
    mapped, report = map_model(src, _pcm(), pack=pack)
    assert _replicas(mapped) == {"c1": 9, "c2": 1, "fc": 16}  # 256 // 27, 256 // 144, 256 // 16
    rows = {ly["name"]: ly for ly in report["layers"]}
    assert rows["c1"]["devices"] == 27 * 16 * 2 * 9 and rows["c1"]["replicas"] == 9
    contract.check_mapped(mapped)  # the copies' rows fit their tiles and overlap nothing
    plain, plain_report = map_model(src, _pcm("none"), pack=pack)
    assert set(_replicas(plain).values()) == {1}
    # the copies' rows are driven too: the first conv's MVM costs more energy, nothing else changes
    e = {ly["name"]: ly["energy_per_inference_uj"] for ly in report["layers"]}
    e0 = {ly["name"]: ly["energy_per_inference_uj"] for ly in plain_report["layers"]}
    assert e["c1"] > 2 * e0["c1"] and e["c2"] == e0["c2"]


def test_packing_places_the_stacked_copies():
    """A 27-row block x 9 takes 243 rows: a 20-row block x 2 as wide as the tile fits neither beside nor
    below it; unreplicated the two share one tile."""
    def blocks(r1: int, r2: int):
        return split(0, 27, 16, 256, 256, replicas=r1) + split(1, 20, 250, 256, 256, replicas=r2)

    packed = blocks(replicas_for(27, 256, "free-rows"), 2)
    assert place_packed(packed, 256, 256) == 2 and check_no_overlap(packed, 256, 256)
    assert place_packed(blocks(1, 1), 256, 256) == 1
    assert replicas_for(300, 256, "free-rows") == 1 and replicas_for(27, 256, "none") == 1


def test_contract_checks_the_copies(tmp_path):
    src = tmp_path / "m.onnx"
    _net(src)
    mapped, _ = map_model(src, _pcm())
    node = next(n for n in mapped.graph.node if n.domain == contract.DOMAIN and n.name == "c1")
    attr = next(a for a in node.attribute if a.name == "replicas")
    attr.i = 10  # 270 rows on a 256-row tile
    with pytest.raises(AcompileError, match=r"node 'c1'.*10 replicas.*does not fit a 256x256 tile"):
        contract.check_mapped(mapped)
    attr.i = 0
    with pytest.raises(AcompileError, match="'replicas' must be >= 1"):
        contract.check_mapped(mapped)


def test_target_validates_replicate(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "pcm"\n[mapping]\nreplicate = "all"\n')
    with pytest.raises(AcompileError, match=r"\[mapping\].replicate must be one of"):
        load_target(str(bad))
    ir = tmp_path / "ir.toml"
    ir.write_text('base = "pcm"\n[tile]\nr_wire = 0.35\n[mapping]\nreplicate = "free-rows"\n')
    with pytest.raises(AcompileError, match="needs \\[tile\\].r_wire = 0"):
        load_target(str(ir))


@pytest.mark.parametrize("reps", [1, 9])
def test_programming_noise_of_the_mean_weight_shrinks_as_sqrt_replicas(reps):
    """Each copy's pair: sigma_prog(x) on the used device and max(0, sigma_prog(0) Z) on the unused one;
    the mean of `reps` independent copies has that variance / reps, the same bias."""
    levels = np.linspace(0.05, 1.0, 20)
    w = torch.tensor(np.tile(levels, (3000, 1)), dtype=torch.float32)
    settings = AnalogSettings.from_target(builtin_target("pcm"), drift=False, read_noise=False)
    tile = ProgrammedTile(w, torch.full((20,), G_MAX), settings, torch.device("cpu"), replicas=reps)
    tile.program(torch.Generator().manual_seed(reps))
    d = (tile.w_eff - tile.w_n).numpy()
    s0 = _sigma_prog(0.0)
    rect_var, rect_mean = s0 * s0 * (0.5 - 1 / (2 * math.pi)), s0 / math.sqrt(2 * math.pi)
    for j, x in enumerate(levels):
        want = math.sqrt((_sigma_prog(x) ** 2 + rect_var) / reps) / G_MAX
        assert float(d[:, j].std()) == pytest.approx(want, rel=0.06), x
        assert float(d[:, j].mean()) == pytest.approx(-rect_mean / G_MAX, abs=5 * want / math.sqrt(3000))


def _one_layer(tmp_path, replicate: str, **periphery) -> Emulator:
    src = tmp_path / "m.onnx"
    _net(src)
    t = _pcm(replicate, **periphery)
    mapped, _ = map_model(src, t, digital=["c1", "c2"])  # only the 16-row Gemm on the crossbar
    s = AnalogSettings.from_target(t, prog_noise=False, drift=False, read_noise=False, kernels="torch")
    emu = Emulator(mapped, s)
    emu.layers[0].program(None)
    return emu


def test_output_noise_and_adc_range_are_one_copys(tmp_path):
    """DAC and ADC off, devices noiseless: the output noise is out_noise of the (re-ranged) output range,
    out_noise * g_max / G_SCALE in the layer's output, with or without copies."""
    for replicate, reps in (("none", 1), ("free-rows", 16)):
        emu = _one_layer(tmp_path, replicate, dac_bits=0, adc_bits=0, out_noise=0.04)
        layer = emu.layers[0]
        assert layer.geo.replicas == reps
        layer.generator = torch.Generator().manual_seed(1)
        f = torch.randn(4000, 16, generator=torch.Generator().manual_seed(2))
        noise = layer(f) - (f @ layer.w_n * layer.col_scale + layer.bias)
        want = 0.04 * float(layer.col_scale.mean())  # col_scale = g_max / G_SCALE = max|W|
        assert float(noise.std()) == pytest.approx(want, rel=0.05), replicate


def test_noise_free_copies_compute_the_layer_through_one_copys_adc(tmp_path):
    emu = _one_layer(tmp_path, "free-rows", dac_bits=0, adc_bits=8, out_noise=0.0, out_bound=10.0)
    layer = emu.layers[0]
    torch.testing.assert_close(layer.w_eff, layer.w_n)  # each copy at the target: the mean is the weight
    f = torch.randn(256, 16, generator=torch.Generator().manual_seed(3)) * 8
    yn = f @ layer.w_n
    want = quantize(yn, 8, 10.0) * layer.col_scale + layer.bias  # the ADC re-ranged by the 16 copies
    torch.testing.assert_close(layer(f), want, rtol=1e-5, atol=1e-5)
    clipped = quantize(16 * yn, 8, 10.0) / 16 * layer.col_scale + layer.bias  # a fixed range would clip
    assert float((clipped - want).abs().max()) > 1e-2


def test_finetuning_sees_the_copies(tmp_path):
    """The fine-tuning forward reads the replicas from the mapping: the same periphery as the emulator
    (noise off: element for element), and programming noise / sqrt(replicas)."""
    from hwtrain.analog_hwa import HWAKnobs
    from hwtrain.finetune import prepare

    src = tmp_path / "m.onnx"
    _net(src)
    t = _pcm(out_noise=0.0)
    prepared = prepare(src, t, digital=["c2", "fc"], knobs=HWAKnobs(noise=0.0, clip=0.0),
                       settings_overrides=dict(kernels="torch"))
    hwa = prepared.layers[0]
    assert hwa.geo.replicas == 9
    mapped, _ = map_model(src, t, digital=["c2", "fc"])
    emu = Emulator(mapped, AnalogSettings.from_target(t, prog_noise=False, drift=False, read_noise=False,
                                                      kernels="torch"))
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    emu.program(0, 0, x.numpy(), 32)
    layer = emu.layers[0]
    layer.set_epilogue(None)  # the conv alone (the executor fuses the ReLU after it)
    hwa.input_range = layer.input_range
    prepared.ctx.active, prepared.ctx.observe = True, False
    w = torch.from_numpy(next(numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer
                              if i.name == "w1").copy())
    got = hwa(x, w).detach()
    want = layer(x)
    step = layer.r * 10.0 / 127 * float(w.abs().max())  # one ADC code
    diff = (got - want).abs()
    assert float(diff.max()) <= 1.01 * step
    assert float((diff > 1e-4 * step).float().mean()) < 2e-3
    # programming noise in training: the mean of 9 copies
    hwa = prepare(src, t, digital=["c2", "fc"], knobs=HWAKnobs(noise=0.038, clip=0.0)).layers[0]
    hwa.generator = torch.Generator().manual_seed(5)
    wm = torch.full((27, 16), 1.0)
    d = torch.stack([hwa.noisy_normalized(wm, torch.ones(16)) - wm for _ in range(300)])
    s0 = _sigma_prog(0.0)
    want_std = math.sqrt((_sigma_prog(1.0) ** 2 + s0 * s0 * (0.5 - 1 / (2 * math.pi))) / 9) / G_MAX
    assert float(d.std()) == pytest.approx(want_std, rel=0.05)


def test_cli_replicate_option(tmp_path, run_cli):
    src = tmp_path / "m.onnx"
    _net(src)
    out = tmp_path / "m.pcm.onnx"
    code, _, err = run_cli(src, "--target", "pcm", "--replicate", "free-rows", "-o", out, "--quiet")
    assert code == 0, err
    assert _replicas(onnx.load(str(out))) == {"c1": 9, "c2": 1, "fc": 16}
    for bad in (["--replicate", "all"], ["--target", "hermes", "--replicate", "free-rows"]):
        target = tmp_path / "ir.toml"
        target.write_text('base = "pcm"\n[tile]\nr_wire = 0.35\n')
        args = [a if a != "hermes" else target for a in bad]
        o2 = tmp_path / "x" / "m.onnx"
        code, _, err = run_cli(src, *args, "-o", o2, "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not o2.parent.exists()  # nothing written
    code, _, err = run_cli("finetune", src, "--replicate", "rows", "-o", tmp_path / "f.onnx")
    assert code == 2 and "--replicate" in err and not (tmp_path / "f.onnx").exists()
