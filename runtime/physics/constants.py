"""Every physical constant of acompile, each next to the paper it comes from.

Nothing else in the project writes a device number: targets (TOML) and training configs refer back here.
Units: conductance in microsiemens (uS), time in seconds.
"""

from __future__ import annotations

# --- PCM inference statistical model -------------------------------------------------------------
# Nandakumar et al., "Phase-change memory models for deep learning training and inference", ICECS 2019,
# and Joshi et al., "Accurate deep neural network inference using computational phase-change memory",
# Nature Communications 11:2473 (2020); as implemented in IBM aihwkit's PCMLikeNoiseModel.

#: Maximum conductance the programming-noise fit was made at (uS).
PCM_G_MAX = 25.0
#: Programming noise std (uS) = c0 + c1 x + c2 x^2 with x = g_target / g_max, at g_max = 25 uS
#: (Nandakumar 2019, Fig. 3; aihwkit prog_coeff = [0.26348, 1.9650, -1.1731]).
PCM_PROG_NOISE_COEFFS = (0.26348, 1.9650, -1.1731)
#: Drift-exponent mean: mu_nu = clip(a ln x + b, lo, hi) (Nandakumar 2019 / aihwkit).
PCM_DRIFT_MU = {"a": -0.0155, "b": 0.0244, "lo": 0.049, "hi": 0.1}
#: Drift-exponent spread: sigma_nu = clip(a ln x + b, lo, hi).
PCM_DRIFT_SIGMA = {"a": -0.0125, "b": -0.0059, "lo": 0.008, "hi": 0.045}
#: Drift reference time t0 (s): G(t) = G_prog ((t + t0) / t0)^-nu (Joshi 2020: first read 20 s after programming).
PCM_T0 = 20.0
#: 1/f read noise: Q_s = min(c / max(x^exp, floor), cap) (Nandakumar 2019 / aihwkit).
PCM_READ_NOISE = {"c": 0.0088, "exp": 0.65, "floor": 1e-3, "cap": 0.2}
#: Read duration t_read (s) in sigma_read = G Q_s sqrt(ln((t + t0 + t_read) / (2 t_read))).
PCM_T_READ = 250e-9
#: Relative conductances below this are treated as this when taking logs (aihwkit _ZERO_CLIP).
PCM_X_FLOOR = 1e-7

# --- IBM HERMES project chip ---------------------------------------------------------------------
# Le Gallo et al., "A 64-core mixed-signal in-memory compute chip based on phase-change memory for deep
# neural network inference", Nature Electronics 6:680 (2023); statistical model as in aihwkit's
# HermesNoiseModel.
HERMES_CORES = 64
HERMES_TILE = (256, 256)
HERMES_G_MAX_2_PER_SIGN = 20.7   # uS, two PCM devices per sign
HERMES_G_MAX_1_PER_SIGN = 10.35  # uS, one device per sign
HERMES_T0_2_PER_SIGN = 300.0     # s
HERMES_T0_1_PER_SIGN = 200.0     # s
HERMES_T_READ = 512e-9           # s
HERMES_TOPS_PER_W = 9.76         # 1-phase mode, chip level
HERMES_DAC_BITS = 8              # 8-bit PWM inputs
HERMES_ADC_BITS = 8              # 8-bit CCO ADCs

# --- Periphery (Joshi 2020; aihwkit InferenceRPUConfig defaults) -----------------------------------
#: DAC / ADC resolution shown sufficient for ResNet-32 on CIFAR-10 (Joshi 2020).
DAC_BITS = 8
ADC_BITS = 8
#: Additive output noise, std in normalized output units (aihwkit forward.out_noise for PCM inference).
OUT_NOISE = 0.04
#: ADC output bound in normalized units (aihwkit forward.out_bound for inference presets).
OUT_BOUND = 10.0

# --- Hardware-aware training (Joshi 2020) ----------------------------------------------------------
#: Weight-noise std relative to max|W| per layer during training (3.8 %; ~0.94 uS of 25 uS).
HWA_ETA_TRAIN = 0.038
#: Weight clipping to alpha * std(W) after each step; 2.0-2.5 used in the paper.
HWA_CLIP_ALPHA = 2.5
