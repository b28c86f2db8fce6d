"""The update rule and the periphery of one in-memory array, by algorithm and device: what every network
(the MLP of network.py, the CNN / LSTM / GAN of nets.py) builds its layers from."""

from __future__ import annotations

import torch

from hwtrain.inmemory.algorithms.analog_sgd import AnalogSGDRule
from hwtrain.inmemory.algorithms.fp32 import FP32Rule
from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
from hwtrain.inmemory.algorithms.tiki_taka import TikiTakaRule
from hwtrain.inmemory.analog_layer import Periphery
from runtime.physics.devices import make_device
from runtime.physics.pcm_pulse import PCMPulseConfig
from runtime.physics.rpu_devices import RPUConfig
from runtime.physics.verified_pair import VerifiedPair


def rpu_config(device: str, p: dict[str, float]) -> RPUConfig:
    kw = dict(kind=device, w_bound=p["w_bound"], asymmetry=p["asymmetry"], d2d=p["d2d"], c2c=p["c2c"],
              offset=p["offset"])
    if p["states"] is not None:
        return RPUConfig.from_states(p["states"], **kw)
    return RPUConfig(dw_min=p["dw_min"], **kw)


def make_periphery(algorithm: str, p: dict[str, float]) -> Periphery:
    """The DAC/ADC/noise of the MVMs; fp32 (the digital baseline) and periphery=0 compute exactly."""
    return Periphery(dac_bits=int(p["dac_bits"]), adc_bits=int(p["adc_bits"]), out_noise=p["out_noise"],
                     enabled=p["periphery"] > 0 and algorithm != "fp32")


def make_rule(algorithm: str, device: str, p: dict[str, float], w: torch.Tensor, gen: torch.Generator,
              batch_size: int, w_max: float):
    """The UpdateRule of one array initialized to w (w_max: the weight at G_max, mixed precision only)."""
    if algorithm == "fp32":
        return FP32Rule(w)
    if algorithm == "mixed-precision":
        cfg = PCMPulseConfig(noise_scale=p["pcm_noise"])
        verified = None if device == "pcm" and not p["verify"] else make_device(device)
        return MixedPrecisionRule(w, w_max=w_max, gen=gen, cfg=cfg, eps_scale=p["eps"],
                                  read_noise=p["read_noise"] > 0, refresh_every=int(p["refresh_every"]),
                                  device=verified)
    if algorithm == "sgd":
        return AnalogSGDRule(w, cfg=rpu_config(device, p), bl=int(p["bl"]), gen=gen)
    return TikiTakaRule(w, variant=algorithm, cfg=rpu_config(device, p), bl=int(p["bl"]), gen=gen,
                        lr_h=p["lr_h"], lr_a_scale=p["lr_a"], p_flip=p["p_flip"],
                        n_cols=int(p["n_cols"]) or batch_size, read_noise=p["out_noise"],
                        sync=p["sync"] > 0, period=int(p["period"]))


def rule_stats(rule) -> dict:
    """What a run's JSON records of one array's rule: its counters, and for PCM pairs refreshes and eps."""
    stats: dict = {"rule": type(rule).__name__}
    for attr in ("pulses", "transfers", "steps"):
        if hasattr(rule, attr):
            stats[attr] = int(getattr(rule, attr))
    if hasattr(rule, "pair"):
        stats["refreshes"] = int(rule.pair.refreshes)
        stats["eps"] = float(rule.eps)
        stats["writes_are"] = "verify writes" if isinstance(rule.pair, VerifiedPair) else "SET pulses"
    return stats
