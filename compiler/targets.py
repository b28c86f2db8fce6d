"""Hardware targets as data: built-in TOML profiles (compiler/targets/*.toml) and users' own files.

A user file may start with ``base = "pcm"`` (or any built-in name; ``pcm`` when omitted) and override
any key; every key it writes is validated, and the resolved target always has every key filled in
(CONTRACTS §4). Unknown keys, wrong types and out-of-range values are an AcompileError naming the key.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler.errors import AcompileError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TARGET_DIR = Path(__file__).parent / "targets"
BUILTIN = ("pcm", "hermes", "ideal")
DEFAULT_BASE = "pcm"
KNOWN_ANALOG_OPS = ("Conv", "Gemm", "MatMul")


def _pos_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "a positive integer"


def _nonneg_int(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 32
    return None if ok else "an integer in 0..32"


def _pos_float(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return None if ok else "a positive number"


def _nonneg_float(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return None if ok else "a non-negative number"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _input_range(v: Any) -> str | None:
    if v == "calibrated" or _pos_float(v) is None:
        return None
    return "\"calibrated\" or a positive number"


def _analog_ops(v: Any) -> str | None:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        bad = [x for x in v if x not in KNOWN_ANALOG_OPS]
        if not bad:
            return None
        return f"a list of ops acompile can map ({', '.join(KNOWN_ANALOG_OPS)}); {bad[0]!r} is not one"
    return "a list of op type strings"


# section -> key -> validator (returns None when fine, else what the value must be)
SCHEMA: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "": {"name": _str, "description": _str},
    "tile": {"rows": _pos_int, "cols": _pos_int, "devices_per_weight": _one_of(1, 2, 4),
             "tiles_per_chip": _pos_int},
    "device": {"model": _one_of("pcm", "ideal"), "g_max": _pos_float, "g_min": _nonneg_float,
               "t0": _pos_float, "t_read": _pos_float, "prog_noise": _bool, "drift": _bool,
               "read_noise": _bool},
    "periphery": {"dac_bits": _nonneg_int, "input_range": _input_range, "adc_bits": _nonneg_int,
                  "out_bound": _input_range, "out_noise": _nonneg_float},
    "mapping": {"analog_ops": _analog_ops, "weight_scale": _one_of("layer", "column"),
                "first_layer": _one_of("analog", "digital"), "last_layer": _one_of("analog", "digital"),
                "grouped_conv": _one_of("digital")},
    "cost": {"energy_per_mvm_pj": _nonneg_float, "latency_per_mvm_ns": _nonneg_float},
}


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise AcompileError(f"target {label}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise AcompileError(f"target {label}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise AcompileError(f"target {label}: cannot read ({exc.strerror})") from None


def _validate(data: dict[str, Any], label: str, partial: bool) -> None:
    """Check every key present; with partial=False also require every key of the schema."""
    for key, value in data.items():
        if key == "base" and partial:
            continue
        if key in SCHEMA and key != "":
            if not isinstance(value, dict):
                raise AcompileError(f"target {label}: [{key}] must be a table")
            for sub, v in value.items():
                check = SCHEMA[key].get(sub)
                if check is None:
                    known = ", ".join(SCHEMA[key])
                    raise AcompileError(f"target {label}: unknown key [{key}].{sub} (known: {known})")
                need = check(v)
                if need is not None:
                    raise AcompileError(f"target {label}: [{key}].{sub} must be {need}, got {v!r}")
        elif key in SCHEMA[""]:
            need = SCHEMA[""][key](value)
            if need is not None:
                raise AcompileError(f"target {label}: {key} must be {need}, got {value!r}")
        else:
            known = ", ".join([*SCHEMA[""], *(f"[{s}]" for s in SCHEMA if s)])
            raise AcompileError(f"target {label}: unknown key {key!r} (known: base, {known})")
    if not partial:
        for section, keys in SCHEMA.items():
            have = data if section == "" else data.get(section, {})
            for k in keys:
                if k not in have:
                    where = k if section == "" else f"[{section}].{k}"
                    raise AcompileError(f"target {label}: missing key {where}")
    if data.get("device", {}).get("g_min", 0.0) >= data.get("device", {}).get("g_max", math.inf):
        raise AcompileError(f"target {label}: [device].g_min must be below [device].g_max")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict):
            out.setdefault(k, {}).update(copy.deepcopy(v))
        else:
            out[k] = v
    return out


def builtin_target(name: str) -> dict[str, Any]:
    """A built-in profile, fully validated."""
    data = _read_toml(TARGET_DIR / f"{name}.toml", repr(name))
    _validate(data, repr(name), partial=False)
    return data


def load_target(spec: str) -> dict[str, Any]:
    """Resolve ``--target``: a built-in name or a path to a TOML file (``base`` + overrides)."""
    if spec in BUILTIN:
        return builtin_target(spec)
    path = Path(spec)
    if path.suffix.lower() != ".toml" and not path.exists():
        raise AcompileError(f"unknown target {spec!r}: use one of {', '.join(BUILTIN)} or a .toml file")
    label = repr(str(path))
    data = _read_toml(path, label)
    base = data.get("base", DEFAULT_BASE)
    if base not in BUILTIN:
        raise AcompileError(f"target {label}: base must be one of {', '.join(BUILTIN)}, got {base!r}")
    _validate(data, label, partial=True)
    merged = _merge(builtin_target(base), {k: v for k, v in data.items() if k != "base"})
    merged.setdefault("name", path.stem)
    if "name" not in data:
        merged["name"] = path.stem
    if "description" not in data:
        merged["description"] = f"user target {path.name} (based on {base})"
    _validate(merged, label, partial=False)
    return merged


def parse_tile(spec: str) -> tuple[int, int]:
    """``--tile 512x512`` -> (512, 512)."""
    parts = spec.lower().split("x")
    try:
        rows, cols = (int(p) for p in parts)
    except ValueError:
        raise AcompileError(f"--tile must look like ROWSxCOLS (e.g. 256x256), got {spec!r}") from None
    if rows <= 0 or cols <= 0:
        raise AcompileError(f"--tile must have positive rows and cols, got {spec!r}")
    return rows, cols


def with_overrides(target: dict[str, Any], tile: tuple[int, int] | None = None,
                   weight_scale: str | None = None) -> dict[str, Any]:
    """Apply command-line overrides (``--tile``, ``--weight-scale``) to a resolved target."""
    out = copy.deepcopy(target)
    if tile is not None:
        out["tile"]["rows"], out["tile"]["cols"] = tile
    if weight_scale is not None:
        out["mapping"]["weight_scale"] = weight_scale
    return out
