"""Targets as data: built-in profiles, user TOML files with `base` + overrides, clear key errors."""

from __future__ import annotations

import pytest

from compiler.targets import BUILTIN, builtin_target, load_target, parse_tile, with_overrides
from runtime.errors import AcompileError


def test_builtins_complete_and_as_published():
    assert BUILTIN[0] == "pcm" and set(BUILTIN) == {"pcm", "hermes", "ideal", "rram"}
    pcm, hermes, ideal, rram = (builtin_target(n) for n in ("pcm", "hermes", "ideal", "rram"))
    assert (pcm["tile"]["rows"], pcm["tile"]["cols"], pcm["tile"]["devices_per_weight"]) == (256, 256, 2)
    assert pcm["device"]["g_max"] == 25.0 and pcm["device"]["t0"] == 20.0
    assert pcm["device"]["t_read"] == 250e-9
    assert pcm["periphery"]["dac_bits"] == pcm["periphery"]["adc_bits"] == 8
    assert pcm["periphery"]["out_noise"] == 0.04 and pcm["periphery"]["out_bound"] == 10.0
    assert hermes["tile"]["tiles_per_chip"] == 64 and hermes["tile"]["devices_per_weight"] == 4
    assert hermes["device"]["g_max"] == 20.7 and hermes["device"]["t0"] == 300.0
    assert hermes["device"]["t_read"] == 512e-9
    assert hermes["device"]["model"] == "pcm-hermes" and hermes["device"]["num_devices"] == 2
    assert rram["device"]["model"] == "rram" and rram["device"]["g_max"] == 40.0  # Wan 2022 fit range
    assert rram["tile"]["tiles_per_chip"] == 48  # NeuRRAM's 48 cores
    # 9.76 TOPS/W: a 256x256 MVM is 2*65536 ops -> pJ
    assert hermes["cost"]["energy_per_mvm_pj"] == pytest.approx(2 * 65536 / 9.76e12 * 1e12, rel=1e-3)
    assert ideal["device"]["model"] == "ideal" and ideal["periphery"]["out_noise"] == 0.0
    assert ideal["periphery"]["dac_bits"] == ideal["periphery"]["adc_bits"] == 0


def test_user_file_base_and_overrides(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "hermes"\n[tile]\nrows = 512\n[mapping]\nfirst_layer = "digital"\n')
    t = load_target(str(f))
    assert t["name"] == "mine" and t["tile"]["rows"] == 512 and t["tile"]["cols"] == 256
    assert t["device"]["g_max"] == 20.7 and t["mapping"]["first_layer"] == "digital"
    f.write_text("[device]\ng_max = 30.0\n")  # no base: pcm defaults
    assert load_target(str(f))["device"]["t0"] == 20.0


@pytest.mark.parametrize("text, message", [
    ("[tile]\nrowz = 3\n", "unknown key [tile].rowz"),
    ("colour = 3\n", "unknown key 'colour'"),
    ("[tile]\nrows = -3\n", "[tile].rows must be a positive integer, got -3"),
    ("[device]\ng_max = \"big\"\n", "[device].g_max must be a positive number"),
    ("[device]\nmodel = \"flash\"\n", "[device].model must be one of 'ideal', 'pcm', 'pcm-hermes', 'rram'"),
    ("[device]\nrelaxation_scale = 2.0\n", "unknown key [device].relaxation_scale for model 'pcm'"),
    ("[device]\nmodel = \"rram\"\nt0 = 20.0\n", "unknown key [device].t0 for model 'rram'"),
    ("base = \"hermes\"\n[device]\nnum_devices = 3\n", "[device].num_devices must be one of 1, 2"),
    ("base = \"hermes\"\n[device]\nnum_devices = 1\ng_max = 20.0\n", "g_max must be <= 10.35"),
    ("base = \"ideal\"\n[device]\ndrift = true\n", "drift must be false for model 'ideal'"),
    ("[mapping]\nanalog_ops = [\"Attention\"]\n", "'Attention' is not one"),
    ("[mapping]\nbias = \"column\"\n", "[mapping].bias must be one of 'digital', 'row'"),
    ("[periphery]\ninput_range = -1.0\n", "[periphery].input_range"),
    ("[periphery]\nout_bound = \"auto\"\n", "[periphery].out_bound"),
    ("base = \"nope\"\n", "base must be one of"),
    ("[tile\n", "not valid TOML"),
    ("[device]\ng_min = 30.0\n", "g_min must be below"),
])
def test_bad_user_files(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(AcompileError) as err:
        load_target(str(f))
    assert message in str(err.value) and "bad.toml" in str(err.value)


def test_device_section_follows_its_model(tmp_path):
    """A file that switches the device model gets that model's keys and defaults, not the base's."""
    f = tmp_path / "mine.toml"
    f.write_text('[device]\nmodel = "rram"\nrelaxation_scale = 0.5\n')
    dev = load_target(str(f))["device"]
    assert dev["model"] == "rram" and dev["relaxation_scale"] == 0.5 and dev["g_max"] == 40.0
    assert "t0" not in dev
    f.write_text('base = "hermes"\n[device]\nnum_devices = 1\n')  # defaults that depend on another key
    dev = load_target(str(f))["device"]
    assert (dev["g_max"], dev["t0"]) == (10.35, 200.0)


def test_unknown_target_and_tile_parse():
    with pytest.raises(AcompileError, match="unknown target"):
        load_target("tpu")
    assert parse_tile("512x1024") == (512, 1024)
    for bad in ("512", "0x4", "ax4"):
        with pytest.raises(AcompileError):
            parse_tile(bad)
    t = with_overrides(builtin_target("pcm"), (128, 64), "column")
    assert (t["tile"]["rows"], t["tile"]["cols"], t["mapping"]["weight_scale"]) == (128, 64, "column")
    assert builtin_target("pcm")["tile"]["rows"] == 256  # overrides copy
