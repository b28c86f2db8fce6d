"""The built-in targets are data, but their physical numbers must agree with runtime/physics/constants.py,
the one place where constants live with their sources."""

from compiler.targets import builtin_target
from runtime.physics import constants as C


def test_pcm_target_matches_the_pcm_model_constants():
    t = builtin_target("pcm")
    assert t["device"]["g_max"] == C.PCM_G_MAX
    assert t["device"]["t0"] == C.PCM_T0
    assert t["device"]["t_read"] == C.PCM_T_READ
    assert t["periphery"]["dac_bits"] == C.DAC_BITS
    assert t["periphery"]["adc_bits"] == C.ADC_BITS
    assert t["periphery"]["out_noise"] == C.OUT_NOISE
    assert t["periphery"]["out_bound"] == C.OUT_BOUND


def test_hermes_target_matches_the_hermes_constants():
    t = builtin_target("hermes")
    assert t["device"]["g_max"] == C.HERMES_G_MAX_2_PER_SIGN
    assert t["device"]["t0"] == C.HERMES_T0_2_PER_SIGN
    assert t["device"]["t_read"] == C.HERMES_T_READ
    assert (t["tile"]["rows"], t["tile"]["cols"]) == C.HERMES_TILE
    assert t["tile"]["tiles_per_chip"] == C.HERMES_CORES
    assert t["periphery"]["dac_bits"] == C.HERMES_DAC_BITS
    assert t["periphery"]["adc_bits"] == C.HERMES_ADC_BITS


def test_ideal_target_has_no_noise():
    d = builtin_target("ideal")["device"]
    assert d["model"] == "ideal"
    assert not (d["prog_noise"] or d["drift"] or d["read_noise"])
