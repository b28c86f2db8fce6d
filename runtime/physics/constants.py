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
#: Drift reference time t0 (s): G(t) = G_prog ((t + t0) / t0)^-nu
#: (Joshi 2020: first read 20 s after programming).
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

# --- `pcm-hermes`: PCM fitted to the HERMES chip's devices ---------------------------------------
# Statistical fits (Nandakumar et al. ICECS 2019 methodology) of the HERMES chip's PCM devices, as
# published in IBM aihwkit's HermesNoiseModel (Le Gallo et al. 2023; Khaddam-Aljameh et al., JSSC 2022;
# two-device cells programmed with the multi-device method of Vasilopoulos et al., IEEE TED 2023).
# Keyed by the devices per cell (1 or 2); x = g / g_max of that cell.
#: Programming noise std (uS) = c0 + c1 x + c2 x^2 + c3 x^3, fitted at g_max = 20.7 (2) / 10.35 (1) uS.
HERMES_PROG_NOISE_COEFFS = {2: (0.16603222, 4.71806468, -8.48101252, 4.68961419),
                            1: (0.15781817, 2.32443916, -2.16310839, 0.68841818)}
#: Drift-exponent mean, a branch fit: x < split: clip(a ln x + b, lo, hi); else c2 x^2 + c1 x + c0
#: (the same for 1 and 2 devices per cell).
HERMES_DRIFT_MU = {"split": 0.0945, "a": -0.0387, "b": -0.0182, "lo": 0.0720, "hi": 0.13,
                   "high": (0.0736, -0.0126, -0.0436)}
#: Drift-exponent std, same branch form, per devices per cell.
HERMES_DRIFT_SIGMA = {
    2: {"split": 0.3055, "a": -0.0117, "b": -0.0057, "lo": 0.0091, "hi": 0.04,
        "high": (0.0073, 0.0093, -0.0118)},
    1: {"split": 0.3039, "a": -0.0120, "b": -0.0023, "lo": 0.0124, "hi": 0.04,
        "high": (0.0104, 0.0116, -0.0165)},
}
#: Relative 1/f noise amplitude Q_s, same branch form (high branch a cubic in x).
HERMES_READ_NOISE_Q = {
    2: {"split": 0.16, "a": -0.0117, "b": -0.0069, "lo": 0.015, "hi": 0.04,
        "high": (0.0123, 0.0211, -0.0280, 0.0069)},
    1: {"split": 0.1591, "a": -0.0078, "b": 0.0038, "lo": 0.0179, "hi": 0.04,
        "high": (0.0088, 0.0768, -0.1352, 0.0664)},
}
HERMES_G_MAX = {2: HERMES_G_MAX_2_PER_SIGN, 1: HERMES_G_MAX_1_PER_SIGN}
HERMES_T0 = {2: HERMES_T0_2_PER_SIGN, 1: HERMES_T0_1_PER_SIGN}

# --- `rram`: resistive RAM fitted to NeuRRAM -------------------------------------------------------
# Wan et al., "A compute-in-memory chip based on resistive random-access memory", Nature 608:504 (2022);
# the fit to its published conductance spreads as in IBM aihwkit's ReRamWan2022NoiseModel: the std (uS)
# of the deviation from the target after programming (1 s), after 1 day and after 2 days, each
# c0 + c1 x + ... + c4 x^4 with x = g / g_max, fitted at g_max = 40 uS.
RRAM_G_MAX = 40.0
RRAM_SPREAD_TIMES = (1.0, 86400.0, 2 * 86400.0)  # s
RRAM_SPREAD_COEFFS = (
    (0.348, 16.030, -43.853, 45.393, -16.815),   # 1 s: programming (write-verify) spread
    (0.701, 22.086, -50.773, 47.095, -16.458),   # 1 day: after relaxation
    (0.782, 20.274, -43.507, 37.062, -11.934),   # 2 days
)
#: Short-term read noise, std as a fraction of g_max (aihwkit's note to ReRamWan2022NoiseModel: "about
#: 1 %" as additive constant weight noise; the paper publishes no separate 1/f data).
RRAM_READ_NOISE = 0.01

# --- Periphery (Joshi 2020; aihwkit StandardHWATrainingPreset) -------------------------------------
# OUT_NOISE / OUT_BOUND are aihwkit's StandardHWATrainingPreset forward values (out_noise 0.04,
# out_bound 10, Rasch et al. 2023), not aihwkit's InferenceRPUConfig / IOParameters defaults: those are
# out_noise 0.06, out_bound 12 with a 7-bit DAC and 9-bit ADC (aihwkit 1.1.0; Gokmen & Vlasov's RPU_*
# values below).
#: DAC / ADC resolution shown sufficient for ResNet-32 on CIFAR-10 (Joshi 2020).
DAC_BITS = 8
ADC_BITS = 8
#: Additive output noise, std in normalized output units (aihwkit StandardHWATrainingPreset out_noise).
OUT_NOISE = 0.04
#: ADC output bound in normalized units (aihwkit StandardHWATrainingPreset out_bound).
OUT_BOUND = 10.0

# --- IR drop: wire resistance of the tile's rows and columns (runtime/physics/ir_drop.py) -------------
#: Resistance (ohm) of one row / column wire segment between neighbouring cells: IBM aihwkit's IR-drop
#: parameters (IOParameters.ir_drop_g_ratio = 1 / (0.35 ohm x 5 uS), documented there as "0.35 Ohm wire
#: resistance" from one cell to the next; aihwkit's IR drop itself is off by default, ir_drop = 0.0).
#: The value an `r_wire` study starts from (`--r-wire`, `[tile] r_wire`); the built-in targets keep 0
#: (off), see their TOML comments and bench/RESULTS-irdrop.md.
AIHWKIT_R_WIRE = 0.35

# --- Hardware-aware training (Joshi 2020) ----------------------------------------------------------
#: Weight-noise std relative to max|W| per layer during training (3.8 %; ~0.94 uS of 25 uS).
HWA_ETA_TRAIN = 0.038
#: Weight clipping to alpha * std(W) after each step; 2.0-2.5 used in the paper.
HWA_CLIP_ALPHA = 2.5

# --- Cost model of one tile MVM (compiler/cost.py; the report's energy and latency) ---------------------
# A target's [cost] energy_per_mvm_pj / latency_per_mvm_ns are the figures of ONE FULL MVM of its
# reference tile ([cost].ref_rows x ref_cols at ref_dac_bits / ref_adc_bits; 256x256, 8/8 bits for the
# built-ins). compiler/cost.py splits them into terms with the shares below and scales each term with what
# a block actually uses: the array term with rows x cols (cells driven), the DAC term with rows (one input
# converter per row), the ADC and digital terms with cols (one ADC per column), all with the converter
# bits. Every number here is either quoted (source named) or marked ASSUMPTION.
#
# Sources:
#   Le Gallo et al., Nature Electronics 6:680 (2023) -- HERMES chip, 64 cores of 256x256, 8-bit PWM inputs,
#     8-bit CCO ADCs, one ADC per column; 1-phase read: 63.1 TOPS peak at 9.76 TOPS/W.
#   Khaddam-Aljameh et al., "HERMES-Core -- a 1.59-TOPS/mm2 PCM on 14-nm CMOS in-memory compute core
#     using 300-ps/LSB linearized CCO-based ADCs", IEEE J. Solid-State Circuits 57(4) (2022): 256 CCO ADCs
#     per 256x256 core, 300 ps per LSB, measured 10.5 TOPS/W.
#   Walden, "Analog-to-digital converter survey and analysis", IEEE JSAC 17(4):539 (1999): the figure of
#     merit FOM = P / (f_s 2^ENOB), i.e. energy per conversion = FOM x 2^bits at a given FOM.
#   Nag et al., "Newton: gravitating towards the physical limits of crossbar acceleration", IEEE Micro
#     38(5):41 (2018): "the ADCs account for a large fraction of chip power and area" (qualitative only).

#: HERMES peak throughput in 1-phase read mode, whole chip (TOPS; Le Gallo 2023).
HERMES_PEAK_TOPS_1PHASE = 63.1
#: HERMES-Core measured energy efficiency (TOPS/W; Khaddam-Aljameh 2022) -- the `pcm` target's figure.
HERMES_CORE_TOPS_PER_W = 10.5
#: CCO ADC conversion time per LSB (s; Khaddam-Aljameh 2022, "300-ps/LSB"): an n-bit conversion counts
#: up to 2^n LSB periods, so its time (and, at a fixed figure of merit, its energy; Walden 1999) ~ 2^n.
HERMES_ADC_LSB_TIME = 300e-12
#: One core's full 256x256 MVM in 1-phase mode (s): 2 x 256 x 256 ops per MVM over one core's share of
#: the chip's peak throughput = 131072 / (63.1e12 / 64) = 132.9 ns (derived from Le Gallo 2023; the
#: built-in targets round it to latency_per_mvm_ns = 130).
HERMES_MVM_TIME = 2 * HERMES_TILE[0] * HERMES_TILE[1] / (HERMES_PEAK_TOPS_1PHASE * 1e12 / HERMES_CORES)
#: Reference point of the built-in targets' [cost] figures: the HERMES core (Le Gallo 2023; 256x256,
#: 8-bit PWM inputs, 8-bit ADCs): rows, cols, DAC / ADC bits.
COST_REF_ROWS, COST_REF_COLS = HERMES_TILE
COST_REF_DAC_BITS = HERMES_DAC_BITS
COST_REF_ADC_BITS = HERMES_ADC_BITS
#: Share of the reference MVM time spent in the ADC conversion: 2^8 x 300 ps = 76.8 ns of 132.9 ns
#: (= 0.578; both numbers quoted above). The rest (0.422) is the PWM integration window.
#: ASSUMPTION: integration and conversion run one after the other and together make the whole MVM time
#: (no overlap, nothing else on the critical path); digital post-processing is pipelined (not costed).
#: The targets' [cost].adc_time_share (the built-in TOMLs write this value; it stands in where missing).
COST_LATENCY_ADC_SHARE = HERMES_ADC_LSB_TIME * 2 ** HERMES_ADC_BITS / HERMES_MVM_TIME
#: Share of the reference full-tile MVM ENERGY in each term, at the reference point.
#: ASSUMPTION: no published per-block breakdown of the HERMES core's energy is used here (none was at
#: hand); the ADCs are taken as the largest share, as crossbar accelerator studies report qualitatively
#: (Nag et al. 2018), the rest split between the array (cell currents), the row drivers (PWM DACs) and
#: the per-output digital accumulate / affine rescale. Change these four numbers (they must sum to 1)
#: when a measured breakdown is available; the full-tile reference figures stay exact either way.
#: The targets' [cost].share_array / share_dac / share_adc / share_digital (the built-in TOMLs write these
#: values; a user target may set its own four, summing to 1; they stand in where a stored target lacks them).
COST_ENERGY_SHARE = {"array": 0.20, "dac": 0.15, "adc": 0.50, "digital": 0.15}

# --- Chip-level figures: peak throughput / efficiency, read modes, data movement (compiler/placement.py) --
#: HERMES published chip figures (Le Gallo et al., Nature Electronics 6:680, 2023), 8-bit MVMs, all 64 cores
#: busy with full 256x256 MVMs: 1-phase read 63.1 TOPS at 9.76 TOPS/W, 4-phase read 16.1 TOPS at 2.48 TOPS/W.
HERMES_PUBLISHED = {1: {"tops": 63.1, "tops_per_w": 9.76}, 4: {"tops": 16.1, "tops_per_w": 2.48}}
#: Read phases per MVM of the two HERMES read modes (Le Gallo 2023: one-phase, four-phase).
#: ASSUMPTION: a four-phase MVM is four one-phase reads, so it takes 4x the time and 4x the energy of one
#: (no fixed per-MVM overhead shared between the phases); compiler/placement.py states the error this gives.
READ_PHASES = (1, 4)
#: Stated tolerance of the HERMES calibration (relative): the model's peak TOPS and TOPS/W in 1-phase mode
#: must reproduce HERMES_PUBLISHED[1] within it (tests/test_placement.py). ASSUMPTION (our choice): 0.5 %.
HERMES_CALIBRATION_TOLERANCE = 0.005
#: Energy of moving one activation byte between cores (pJ per byte): Horowitz, "Computing's energy problem",
#: ISSCC 2014 (45 nm): a 64-bit access of an 8 KB SRAM costs 10 pJ -> 1.25 pJ per byte.
#: ASSUMPTION: one such buffer access per byte moved covers the link between cores (no wire-length term, no
#: separate inter-chip cost); transfer TIME is assumed hidden behind the MVMs of the next stage.
#: The targets' [cost].movement_pj_per_byte (the built-in TOMLs write this value; it stands in where missing).
MOVEMENT_PJ_PER_BYTE = 10.0 / 8


# =====================================================================================================
# In-memory TRAINING devices (owned by hwtrain/inmemory; pulse-update models in runtime/physics/
# pcm_pulse.py and runtime/physics/rpu_devices.py). Appended section — the inference constants above are
# the lead's. Units: uS for PCM conductances, normalized weight units for RPU devices.
# =====================================================================================================

# --- PCM SET-pulse (partial-SET) statistical model --------------------------------------------------
# Nandakumar et al., "A phase-change memory model for neuromorphic computing", J. Appl. Phys. 124,
# 152135 (2018), as re-implemented publicly (DESIGN.md §8); n = SET pulses since the last RESET:
#   mean dG = A_G * G + A_0 + A_N * exp(-n / N_TAU);   std dG = S_G * G + S_0 + S_N * exp(-n / N_TAU)
PCM_SET_MEAN_G = -0.084  # 1 (slope of mean increment vs G)
PCM_SET_MEAN_0 = 0.880  # uS
PCM_SET_MEAN_N = 1.40  # uS (extra increment of the first pulses after RESET)
PCM_SET_STD_G = 0.091  # 1
PCM_SET_STD_0 = 0.260  # uS
PCM_SET_STD_N = 2.15  # uS
PCM_SET_N_TAU = 2.6  # pulses
PCM_TRAIN_G_MIN = 0.1  # uS, lower clip (J. Appl. Phys. 2018 model)
PCM_RESET_MEAN = 0.1  # uS, RESET state N(0.1, 0.01) (same source)
PCM_RESET_STD = 0.01  # uS
# The mean increment vanishes at G = 0.880/0.084 = 10.5 uS: the device saturates there. acompile clips at
# 10 uS and refreshes a pair once one device passes 90 % of it (our choice; Nandakumar 2020 Frontiers
# refreshes "when a device saturates").
PCM_TRAIN_G_MAX = 10.0  # uS
PCM_REFRESH_FRACTION = 0.9  # of PCM_TRAIN_G_MAX
# --- Program-and-verify writes (mixed precision on a registered device without a pulse model) ---------
# A device whose only published write behaviour is its programming spread after program-and-verify (the
# inference fits: pcm-hermes, rram, the pcm fit of DESIGN §6) takes mixed-precision transfers as verify
# writes of the accumulated change. The write resolution (one eps) is the device's programming spread at
# half its g_max: a smaller change is lost in the write's own noise (acompile's choice, after Nandakumar
# 2020's eps = one device increment). A noiseless device gets VERIFY_NOISELESS_STEPS steps over g_max, the
# resolution of an 8-bit write (sign + 7 bits; an assumption, stated in RESULTS-inmemory.md).
VERIFY_RESOLUTION_AT = 0.5  # of g_max
VERIFY_NOISELESS_STEPS = 128
# Mixed-precision headline numbers to reproduce (Nandakumar et al., ISCAS 2018 / Front. Neurosci. 2020):
# 784-250-10 MLP on MNIST, 97.40 % (simulation, 2018); 97.73 % on PCM hardware, 0.57 % below fp64.
MP_MNIST_TARGET_ACCURACY = 0.9740

# --- Resistive processing unit (RPU) specs ---------------------------------------------------------------
# Gokmen & Vlasov, "Acceleration of deep neural network training with resistive cross-point devices",
# Front. Neurosci. 10:333 (2016), Table 1: ~1000-1200 states (dw_min 0.001 on [-0.6, 0.6]), device-to-
# device and cycle-to-cycle variation 30 %, up/down symmetry within 2 %, output noise 0.06, out bound 12,
# 7-bit DAC, 9-bit ADC, stochastic bit length BL = 10 (their MNIST runs).
RPU_DW_MIN = 0.001
RPU_W_BOUND = 0.6
RPU_D2D = 0.30
RPU_C2C = 0.30
RPU_UP_DOWN_ASYMMETRY = 0.02
RPU_OUT_NOISE = 0.06
RPU_OUT_BOUND = 12.0
RPU_DAC_BITS = 7
RPU_ADC_BITS = 9
RPU_BL = 10

# --- Tiki-Taka family ------------------------------------------------------------------------------
# Gokmen & Haensch, Front. Neurosci. 14:103 (2020) (Tiki-Taka); Rasch et al., "Fast and robust analog
# in-memory deep neural network training", arXiv 2303.04721 (2023) / Nat. Commun. 2024 (TTv2, c-TTv2,
# AGAD). The numbers below are acompile's defaults in that spirit, not values quoted from the papers:
# soft-bounds devices with 1000 states on [-1, 1] (Gokmen & Vlasov's ~1000 states), offsets swept 0..0.5
# (DESIGN §8: TTv2 degrades beyond ~0.1 = 5 % of range, c-TTv2 holds to ~0.5, AGAD is invariant).
TT_DW_MIN = 0.002
TT_W_BOUND = 1.0
TT_CHOPPER_FLIP_PROB = 0.1  # per column read (AGAD; c-TTv2 with sync=0)
TT_H_THRESHOLD = 1.0  # |H| (in units of W's dw_min) at which one pulse is written to W
