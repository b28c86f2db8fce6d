"""The `--param NAME=VALUE` vocabulary of in-memory training, with defaults, checks and sources."""

from __future__ import annotations

import math

from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices import device_names
from runtime.physics.devices.base import bits

ALGORITHMS = ("mixed-precision", "sgd", "ttv2", "cttv2", "agad", "fp32")
#: step devices of the analog-SGD / Tiki-Taka family (runtime/physics/rpu_devices.py)
RPU_DEVICES = ("softbounds", "linear")


def training_devices() -> tuple[str, ...]:
    """What `--device` of in-memory training takes: the RPU step devices and every registered device
    (pcm under SET pulses, the others under program-and-verify writes)."""
    return (*RPU_DEVICES, *device_names())


def compatible_devices(algorithm: str) -> tuple[str, ...]:
    """Devices an algorithm runs on: mixed precision on every registered device (pcm by SET pulses, the
    others by verify writes), the pulse-SGD family on the RPU step devices, fp32 ignores the device."""
    if algorithm == "mixed-precision":
        return tuple(device_names())
    if algorithm == "fp32":
        return training_devices()
    return RPU_DEVICES


def check_algorithm(algorithm: str, device: str) -> None:
    """Refuse a device the algorithm cannot train on (before any work)."""
    if device not in compatible_devices(algorithm):
        raise AcompileError(f"algorithm {algorithm!r} runs on device(s) "
                            f"{', '.join(compatible_devices(algorithm))}, not {device!r}")


# name -> (default, check, meaning)
PARAMS: dict[str, tuple[float | None, str, str]] = {
    # RPU step devices (Gokmen & Vlasov 2016; Rasch 2023)
    "states": (None, ">1", "number of states over [-w_bound, w_bound] (sets dw_min)"),
    "dw_min": (C.TT_DW_MIN, ">0", "RPU step size in weight units"),
    "w_bound": (C.TT_W_BOUND, ">0", "RPU weight bound"),
    "asymmetry": (0.0, "(-1,1)", "up/down step asymmetry a: dw_up = dw_min(1+a), dw_down = dw_min(1-a)"),
    "d2d": (0.0, ">=0", "device-to-device relative variation of dw_min and bounds"),
    "c2c": (0.0, ">=0", "cycle-to-cycle relative noise of each step"),
    "offset": (0.0, ">=0", "std of the per-device symmetry point (= reference offset for TTv2)"),
    "bl": (float(C.RPU_BL), ">=1", "stochastic pulse-train bit length BL"),
    # Tiki-Taka family
    "lr_h": (0.05, ">0", "transfer rate into H (Tiki-Taka family)"),
    "lr_a": (1.0, ">0", "gradient rate on A relative to lr (Tiki-Taka family)"),
    "p_flip": (C.TT_CHOPPER_FLIP_PROB, "[0,1]", "chopper flip probability per column read"),
    "period": (1.0, ">=1", "c-TTv2 chopper half-period in reads of a column"),
    "sync": (1.0, "[0,1]", "c-TTv2: 1 = periodic chopper + cycle-synchronous transfer, 0 = random flips"),
    "n_cols": (0.0, ">=0", "columns of A read per update (0 = batch size)"),
    # mixed precision (pcm: SET pulses; every other registered device, or verify=1: verify writes)
    "w_max": (0.3, ">0", "weight represented by G_max on one side of the pair"),
    "w_max_out": (0.0, ">=0", "w_max of the output layer (0 = same as w_max); its weights grow larger"),
    "eps": (1.0, ">0", "eps as a multiple of one device increment (pcm: the mean SET increment; "
                    "verify-written devices: the write resolution)"),
    "pcm_noise": (1.0, ">=0", "scale of the SET-pulse increment std (1 = published)"),
    "refresh_every": (1.0, ">=1", "updates between saturation checks"),
    "verify": (0.0, "[0,1]", "mixed precision on pcm: 1 = transfers are program-and-verify writes of the "
               "registered pcm device (as on every other device) instead of SET pulses"),
    # periphery and reads
    "read_noise": (1.0, ">=0", "mixed precision: the device's read noise on (1) / off (0); for RPU arrays "
                   "the column-read noise"),
    "out_noise": (C.OUT_NOISE, ">=0", "additive MVM output noise (normalized units)"),
    "dac_bits": (float(C.DAC_BITS), ">=0", "DAC bits (0 = none)"),
    "adc_bits": (float(C.ADC_BITS), ">=0", "ADC bits (0 = none)"),
    "periphery": (1.0, "[0,1]", "1 = forward/backward through DAC/ADC/noise, 0 = exact MVMs"),
    # data / schedule
    "limit": (0.0, ">=0", "use only the first N training images (0 = all)"),
    "test_limit": (0.0, ">=0", "use only the first N test images (0 = all)"),
    "lr_decay": (0.9, ">0", "multiply lr by this after every epoch"),
    # the networks beyond the MLP (cnn, charlstm, gan: hwtrain/inmemory/nets.py)
    "w_max_rel": (2.0, ">0", "cnn/charlstm/gan, mixed precision: each array's w_max / its init bound"),
    "w_max_out_rel": (0.0, ">=0",
                      "cnn/charlstm/gan: w_max / init bound of the output array (gan: D's) (0 = w_max_rel)"),
    "seq_len": (64.0, ">=1", "charlstm: characters per training sequence (truncated BPTT)"),
    "hidden": (128.0, ">=1", "charlstm: LSTM hidden size"),
    "d_lr": (1.0, ">0", "gan: the discriminator's lr as a multiple of lr"),
    "real_label": (1.0, "(0,1]", "gan: target of real digits for D (one-sided label smoothing < 1)"),
    "width": (16.0, ">=1", "cnn: channels of the first conv block (the second has twice as many)"),
}


#: parameters that count something (a float that is not whole is an error, not truncated)
_INTEGERS = ("verify", "limit", "test_limit", "dac_bits", "adc_bits", "n_cols", "seq_len", "hidden", "width")


def _ok(value: float, check: str) -> bool:
    if check == ">0":
        return value > 0
    if check == ">1":
        return value > 1
    if check == ">=0":
        return value >= 0
    if check == ">=1":
        return value >= 1
    if check == "(-1,1)":
        return -1 < value < 1
    if check == "(0,1]":
        return 0 < value <= 1
    if check == "[0,1]":
        return 0 <= value <= 1
    raise AssertionError(check)


def resolve(params: dict[str, float] | None) -> dict[str, float]:
    """Defaults filled in; unknown names and out-of-range values are AcompileErrors naming the param."""
    out = {k: v[0] for k, v in PARAMS.items()}
    for name, value in (params or {}).items():
        if name not in PARAMS:
            raise AcompileError(f"unknown in-memory training parameter {name!r}; known: {', '.join(PARAMS)}")
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise AcompileError(f"parameter '{name}' must be a number, got {value!r}") from exc
        check = PARAMS[name][1]
        if not math.isfinite(value):
            raise AcompileError(f"parameter '{name}' must be a finite number, got {value:g}")
        if name in _INTEGERS and not value.is_integer():
            raise AcompileError(f"parameter '{name}' must be a whole number, got {value:g} "
                                f"({PARAMS[name][2]})")
        if name in ("dac_bits", "adc_bits") and bits(int(value)) is not None:
            raise AcompileError(f"parameter '{name}' must be {bits(int(value))}, got {value:g}")
        if not _ok(value, check):
            bound = check.replace(">=", ">= ") if check.startswith(">=") else check.replace(">", "> ")
            raise AcompileError(f"parameter '{name}' must be {bound}, got {value:g} "
                                f"({PARAMS[name][2]})")
        out[name] = value
    return out


def parse_assignments(text: str) -> dict[str, float]:
    """'a=1,b=2' -> {'a': 1.0, 'b': 2.0} (used by the CLI)."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise AcompileError(f"parameter {item!r} must look like NAME=VALUE")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise AcompileError(f"parameter '{name.strip()}' must be a number, got {value!r}") from exc
    return out


#: the networks beyond the MLP (hwtrain/inmemory/nets.py) and the dataset each trains on
NETS = {"cnn": "cifar10", "charlstm": "tinyshakespeare", "gan": "mnist"}


def check_net_outputs(model: str, out: object, resume: object) -> None:
    """The networks of NETS write metrics only (--json): -o and --resume are refused before any work."""
    if model in NETS and (out is not None or resume is not None):
        raise AcompileError(f"in-memory {model}: ONNX export (-o) and checkpoints (--resume) are not "
                            "supported; use --json for the metrics")
