"""Command-line option types of every command, built on the target schema's validators.

The checks are those of `runtime.physics.devices.base` (pos_int, bits, pos_float, nonneg_float, ...),
which the target TOML validator (compiler/targets.py) uses too, so `--adc-bits 99` and `adc_bits = 99`
fail the same way. Each type is a click ParamType: a bad value stops the command while click parses its
arguments, before anything heavy (torch) is imported, as one `acompile: error: ...` line (exit code 2).

Imports click, the standard library and runtime.errors / runtime.physics.devices.base only (no torch,
no numpy), so every CLI module may use it at module level.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import click

from runtime.errors import AcompileError
from runtime.physics.devices.base import bits, nonneg_float, pos_float, pos_int

Check = Callable[[Any], "str | None"]

#: --chips: Monte Carlo chips of one `acompile eval` run (each one programs and scores the whole model)
MAX_CHIPS = 10_000
#: --threads: torch / onnxruntime CPU threads
MAX_THREADS = 1024
#: --seed: torch.manual_seed and numpy's SeedSequence take it (finetune always allowed 0 .. 2^63-1)
MAX_SEED = 2**63 - 1

COMPENSATIONS = ("none", "global", "column", "bn", "global+bn")  # runtime.compensation.METHODS (tested)

_UNITS = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


# ---- checks beyond the target schema's ----------------------------------------------------------------
def int_in(lo: int, hi: int | None = None) -> Check:
    """An integer in lo..hi (no upper bound when hi is None)."""
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        if ok:
            return None
        return f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    return check


def nonneg_int(v: Any) -> str | None:
    return int_in(0)(v) and "a non-negative integer"


def fraction(v: Any) -> str | None:
    """A number in [0, 1)."""
    return None if nonneg_float(v) is None and v < 1 else "a number in [0, 1)"


def unit_interval(v: Any) -> str | None:
    """A number in [0, 1] (a mixing weight)."""
    return None if nonneg_float(v) is None and v <= 1 else "a number in [0, 1]"


# ---- parsers (torch-free; runtime.evaluate and the CLIs share them) -------------------------------------
def parse_times(spec: str, flag: str = "--times", positive: bool = False) -> list[float]:
    """'1s,1h,1d,30d,1y' or seconds ('25,3600') -> seconds after programming (>= 0, or > 0 when
    `positive`). An empty list is an error, never a fallback to defaults."""
    out = []
    for part in str(spec).split(","):
        p = part.strip().lower()
        if not p:
            continue
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(s|min|m|h|d|w|y)?", p)
        if not m:
            raise AcompileError(f"{flag}: cannot read '{part}' (use seconds or 1s, 1h, 1d, 30d, 1y)")
        v = float(m.group(1)) * _UNITS[m.group(2) or "s"]
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise AcompileError(f"{flag}: '{part.strip()}' must be a time {'>' if positive else '>='} 0")
        out.append(v)
    if not out:
        raise AcompileError(f"{flag}: no time points given")
    return out


def format_time(t: float) -> str:
    """Seconds -> the shortest of 1s / 1h / 1d / 30d / 1y style labels."""
    for unit, sec in (("y", _UNITS["y"]), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t >= sec and abs(t / sec - round(t / sec)) < 1e-9:
            return f"{round(t / sec)}{unit}"
    return f"{t:g}s"


def parse_floats(text: str, flag: str, check: Check = lambda v: None) -> list[float]:
    """'0.5,0.25' -> [0.5, 0.25]; each value finite and passing `check`; at least one value."""
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise AcompileError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise AcompileError(f"{flag}: no numbers given")
    for v in vals:
        need = "a finite number" if not math.isfinite(v) else check(v)
        if need is not None:
            raise AcompileError(f"{flag}: each value must be {need}, got {v:g} in {text!r}")
    return vals


def parse_bound(text: str, flag: str = "--out-bound") -> float | str:
    """A positive number or 'calibrated'."""
    if str(text).strip().lower() == "calibrated":
        return "calibrated"
    try:
        v = float(text)
    except ValueError:
        raise AcompileError(f"{flag}: expected a number or 'calibrated', got {text!r}") from None
    if pos_float(v) is not None:
        raise AcompileError(f"{flag} must be a positive number or 'calibrated', got {text}")
    return v


#: --duplicate N: most copies of one layer's weights (a bound on the search, not on the chip)
MAX_COPIES = 10_000


def parse_duplicate(text: str, flag: str = "--duplicate") -> str | int:
    """'auto' (copy the bottleneck layer while free cores remain) or N in 1..MAX_COPIES (at most N copies
    of a layer; 1 = no duplication)."""
    t = str(text).strip().lower()
    if t == "auto":
        return "auto"
    try:
        v = int(t)
    except ValueError:
        raise AcompileError(f"{flag} must be 'auto' or an integer in 1..{MAX_COPIES}, got {text!r}") from None
    need = int_in(1, MAX_COPIES)(v)
    if need is not None:
        raise AcompileError(f"{flag} must be 'auto' or {need}, got {text}")
    return v


def parse_compensation(text: str, flag: str = "--compensation") -> list[str]:
    methods = [m.strip().lower() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise AcompileError(f"{flag}: no method given (use {', '.join(COMPENSATIONS)})")
    for m in methods:
        if m not in COMPENSATIONS:
            raise AcompileError(f"{flag}: unknown compensation {m!r} (use {', '.join(COMPENSATIONS)})")
    return methods


# ---- click types --------------------------------------------------------------------------------------
def _flag(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
    return opts[0] if opts else (param.name or "value")


class Checked(click.ParamType):
    """A number (int or float) that must pass a schema check, e.g. ``Checked(int, pos_int)``."""

    def __init__(self, kind: type, check: Check, name: str | None = None) -> None:
        self.kind, self.check = kind, check
        self.name = name or ("integer" if kind is int else "number")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = self.kind(str(value).strip())
            except ValueError:
                raise AcompileError(f"{_flag(param)} must be {self._need()}, got {value!r}") from None
        need = self.check(v)
        if need is not None:
            raise AcompileError(f"{_flag(param)} must be {need}, got {value}")
        return v

    def _need(self) -> str:
        return self.check("\0") or ("an integer" if self.kind is int else "a number")


class Parsed(click.ParamType):
    """A string option read by a parser `fn(text, flag) -> value` that raises AcompileError."""

    def __init__(self, fn: Callable[[str, str], Any], name: str) -> None:
        self.fn, self.name = fn, name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        # a value parsed before (a list, a number) is checked again through its text, so a direct call
        # of a command's function gets the same checks as the command line
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return self.fn(str(value), _flag(param))


POS_INT = Checked(int, pos_int)
NONNEG_INT = Checked(int, nonneg_int)
BITS = Checked(int, bits, "bits")
CHIPS = Checked(int, int_in(1, MAX_CHIPS))
THREADS = Checked(int, int_in(1, MAX_THREADS))
#: --workers: CPUs of a local Ray instance (the bounds of --threads)
WORKERS = THREADS
SEED = Checked(int, int_in(0, MAX_SEED))
POS_FLOAT = Checked(float, pos_float)
NONNEG_FLOAT = Checked(float, nonneg_float)
FRACTION = Checked(float, fraction)
UNIT = Checked(float, unit_interval)
TIMES = Parsed(parse_times, "times")
POS_TIMES = Parsed(lambda t, f: parse_times(t, f, positive=True), "times")
FLOATS = Parsed(parse_floats, "numbers")
POS_FLOATS = Parsed(lambda t, f: parse_floats(t, f, pos_float), "numbers")
BOUND = Parsed(parse_bound, "bound")
COMPENSATION = Parsed(parse_compensation, "methods")
DUPLICATE = Parsed(parse_duplicate, "auto|N")


def same_length(a: Sequence | None, b: Sequence | None, flags: str = "--mean and --std") -> None:
    if a is not None and b is not None and len(a) != len(b):
        raise AcompileError(f"{flags} need the same number of values, got {len(a)} and {len(b)}")


#: `acompile eval --metric`: accuracy against the labels, or (no labels needed) fidelity to the digital
#: model: agreement (share of equal top-1) and rel-error (relative L2 error of the outputs)
METRICS = ("accuracy", "agreement", "rel-error")


#: `--calib-augment`: the images `bn` compensation re-estimates BN statistics on. BN statistics are
#: learned on augmented training batches; re-estimating them on clean images shifts them away from what
#: the following layers were trained with (ResNet-32, no noise at all: -1.2 points for Idelbayev's
#: network, -0.2 with crop + flip; bench/RESULTS-finetune.md). auto = crop-flip for 32x32 RGB images.
CALIB_AUGMENT = ("auto", "crop-flip", "none")


def check_metric(metric: str, balanced: bool = False) -> None:
    """--metric is known and --balanced goes with accuracy only (AcompileError otherwise)."""
    from runtime.errors import AcompileError

    if metric not in METRICS:
        raise AcompileError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if balanced and metric != "accuracy":
        raise AcompileError(f"--balanced applies to --metric accuracy only, not {metric}")
