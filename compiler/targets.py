"""Hardware targets as data: built-in TOML profiles (compiler/targets/*.toml) and users' own files.

A user file may start with ``base = "pcm"`` (or any built-in name; ``pcm`` when omitted) and override
any key; every key it writes is validated, and the resolved target always has every key filled in
(CONTRACTS §4). Unknown keys, wrong types and out-of-range values are an AcompileError naming the key.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler.cost import shares_error, shares_of
from compiler.tiling import REPLICATE
from runtime.errors import AcompileError
from runtime.physics.devices import DeviceError, device_class
from runtime.physics.devices.base import MAX_BITS, bits, nonneg_float, one_of, pos_float, pos_int, string

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

TARGET_DIR = Path(__file__).parent / "targets"
DEFAULT_BASE = "pcm"
#: Built-in targets: one TOML each in compiler/targets (the default first).
BUILTIN = tuple(sorted((p.stem for p in TARGET_DIR.glob("*.toml")), key=lambda n: (n != DEFAULT_BASE, n)))
KNOWN_ANALOG_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN")


def _input_range(v: Any) -> str | None:
    if v == "calibrated" or pos_float(v) is None:
        return None
    return "\"calibrated\" or a positive number"


def _analog_ops(v: Any) -> str | None:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        bad = [x for x in v if x not in KNOWN_ANALOG_OPS]
        if not bad:
            return None
        return f"a list of ops acompile can map ({', '.join(KNOWN_ANALOG_OPS)}); {bad[0]!r} is not one"
    return "a list of op type strings"


def _ref_bits(v: Any) -> str | None:
    """The resolution the [cost] reference figures were measured at: a real converter (not 0 = ideal)."""
    ok = isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= MAX_BITS
    return None if ok else f"an integer in 2..{MAX_BITS}"


def _fraction(v: Any) -> str | None:
    """A share of the reference MVM's energy or time: a number in 0..1."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
    return None if ok else "a number in 0..1"


# section -> key -> validator (returns None when fine, else what the value must be)
SCHEMA: dict[str, dict[str, Callable[[Any], str | None]]] = {
    "": {"name": string, "description": string},
    "tile": {"rows": pos_int, "cols": pos_int, "devices_per_weight": one_of(1, 2, 4),
             "tiles_per_chip": pos_int, "r_wire": nonneg_float},
    "device": {},  # the keys of the device model named by [device].model (runtime/physics/devices)
    "periphery": {"dac_bits": bits, "input_range": _input_range, "adc_bits": bits,
                  "out_bound": _input_range, "out_noise": nonneg_float},
    "mapping": {"analog_ops": _analog_ops, "weight_scale": one_of("layer", "column"),
                "first_layer": one_of("analog", "digital"), "last_layer": one_of("analog", "digital"),
                "grouped_conv": one_of("digital"), "bias": one_of("digital", "row"),
                "replicate": one_of(*REPLICATE)},
    # energy / latency of one full MVM of the reference tile (ref_rows x ref_cols at ref_*_bits), the
    # split of that energy into the array / DAC / ADC / digital terms (share_*, summing to 1: a cross-key
    # check, _check_cost), the ADC's share of that time, and the energy per activation byte moved between
    # cores; compiler/cost.py scales them to the rows, columns and converter bits each block uses
    "cost": {"energy_per_mvm_pj": nonneg_float, "latency_per_mvm_ns": nonneg_float,
             "ref_rows": pos_int, "ref_cols": pos_int, "ref_dac_bits": _ref_bits, "ref_adc_bits": _ref_bits,
             "share_array": _fraction, "share_dac": _fraction, "share_adc": _fraction,
             "share_digital": _fraction, "adc_time_share": _fraction, "movement_pj_per_byte": nonneg_float},
}


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise AcompileError(f"target {label}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise AcompileError(f"target {label}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:  # tomllib decodes the bytes first: a binary file, another encoding
        raise AcompileError(f"target {label}: not valid TOML (not UTF-8 text)") from None
    except OSError as exc:
        raise AcompileError(f"target {label}: cannot read ({exc.strerror})") from None


def _validate(data: dict[str, Any], label: str, partial: bool, base_model: str | None = None) -> None:
    """Check every key present; with partial=False also require every key of the schema. The [device]
    keys are those of its model (`base_model` when a partial file does not name one)."""
    for key, value in data.items():
        if key == "base" and partial:
            continue
        if key in SCHEMA and key != "":
            if not isinstance(value, dict):
                raise AcompileError(f"target {label}: [{key}] must be a table")
            if key == "device":
                _device_section(value, label, base_model)
                continue
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
        if "model" not in data.get("device", {}):
            raise AcompileError(f"target {label}: missing key [device].model")
        _check_cost(data["cost"], label)
        if data["mapping"]["replicate"] != "none" and data["tile"]["r_wire"] > 0:
            raise AcompileError(f"target {label}: [mapping].replicate = {data['mapping']['replicate']!r} "
                                "needs [tile].r_wire = 0 (IR drop of replicated rows is not modelled)")


def _check_cost(cost: dict[str, Any], label: str) -> None:
    """Cross-key checks of a complete [cost] table: the four energy shares sum to 1."""
    bad = shares_error(shares_of(cost))
    if bad is not None:
        raise AcompileError(f"target {label}: {bad} (a user target changing one share must set all four)")


def _device_section(section: dict[str, Any], label: str, base_model: str | None) -> dict[str, Any]:
    """The [device] table checked by its device model, every key of that model filled in."""
    params = dict(section)
    model = params.pop("model", base_model)
    try:
        return {"model": model, **device_class(model).resolve(params)}
    except DeviceError as exc:
        raise AcompileError(f"target {label}: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, table by table; a [device] that names another model starts afresh
    (the base's device keys belong to the base's model)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k == "device" and v.get("model", out[k]["model"]) != out[k]["model"]:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict):
            out.setdefault(k, {}).update(copy.deepcopy(v))
        else:
            out[k] = v
    return out


def _builtin_file(name: str) -> dict[str, Any]:
    """A built-in profile as written (device keys it leaves out follow its model's defaults)."""
    data = _read_toml(TARGET_DIR / f"{name}.toml", repr(name))
    _validate(data, repr(name), partial=False)
    return data


def builtin_target(name: str) -> dict[str, Any]:
    """A built-in profile, fully validated, its device keys filled in."""
    data = _builtin_file(name)
    data["device"] = _device_section(data["device"], repr(name), None)
    return data


def load_target(spec: str) -> dict[str, Any]:
    """Resolve ``--target``: a built-in name or a path to a TOML file (``base`` + overrides)."""
    if spec in BUILTIN:
        return builtin_target(spec)
    if not str(spec).strip():  # Path("") is the working folder
        raise AcompileError(f"unknown target {spec!r}: use one of {', '.join(BUILTIN)} or a .toml file")
    path = Path(spec)
    if path.suffix.lower() != ".toml" and not path.exists():
        raise AcompileError(f"unknown target {spec!r}: use one of {', '.join(BUILTIN)} or a .toml file")
    label = repr(str(path))
    data = _read_toml(path, label)
    base = data.get("base", DEFAULT_BASE)
    if base not in BUILTIN:
        raise AcompileError(f"target {label}: base must be one of {', '.join(BUILTIN)}, got {base!r}")
    base_target = _builtin_file(base)
    _validate(data, label, partial=True, base_model=base_target["device"]["model"])
    merged = _merge(base_target, {k: v for k, v in data.items() if k != "base"})
    merged.setdefault("name", path.stem)
    if "name" not in data:
        merged["name"] = path.stem
    if "description" not in data:
        merged["description"] = f"user target {path.name} (based on {base})"
    _validate(merged, label, partial=False)
    merged["device"] = _device_section(merged["device"], label, None)
    return merged


def parse_tile(spec: str) -> tuple[int, int]:
    """``--tile 512x512`` -> (512, 512)."""
    parts = spec.lower().split("x")
    try:
        rows, cols = (int(p) for p in parts)
    except ValueError:
        raise AcompileError(f"--tile must look like ROWSxCOLS (e.g. 256x256), got {spec!r}") from None
    if pos_int(rows) is not None or pos_int(cols) is not None:  # the [tile].rows / cols check
        raise AcompileError(f"--tile must have positive rows and cols, got {spec!r}")
    return rows, cols


def with_overrides(target: dict[str, Any], tile: tuple[int, int] | None = None,
                   weight_scale: str | None = None, replicate: str | None = None) -> dict[str, Any]:
    """Apply command-line overrides (``--tile``, ``--weight-scale``, ``--replicate``) to a resolved
    target."""
    out = copy.deepcopy(target)
    if tile is not None:
        out["tile"]["rows"], out["tile"]["cols"] = tile
    if weight_scale is not None:
        out["mapping"]["weight_scale"] = weight_scale
    if replicate is not None:
        if replicate != "none" and out["tile"].get("r_wire", 0.0) > 0:
            raise AcompileError(f"--replicate {replicate}: target {out.get('name')!r} has r_wire > 0 (IR "
                                "drop of replicated rows is not modelled)")
        out["mapping"]["replicate"] = replicate
    return out


def with_device(target: dict[str, Any], model: str | None = None, **keys: Any) -> dict[str, Any]:
    """A copy of a resolved target on another device model (its own keys and defaults) and/or with some
    [device] keys changed."""
    out = copy.deepcopy(target)
    section = {"model": model} if model and model != out["device"]["model"] else out["device"]
    out["device"] = _device_section({**section, **keys}, repr(out.get("name", "target")), None)
    return out


# ---- showing a target (`acompile targets`) ---------------------------------------------------------------

#: Units of the keys outside [device] (the comments of compiler/targets/pcm.toml); [device] keys take
#: theirs from the device model's key docs ("uS, ...", "s, ...").
UNITS: dict[str, dict[str, str]] = {
    "tile": {"rows": "cells", "cols": "cells", "r_wire": "ohm"},
    "periphery": {"dac_bits": "bits", "adc_bits": "bits", "input_range": "input units",
                  "out_bound": "normalized units", "out_noise": "normalized units (std)"},
    "cost": {"energy_per_mvm_pj": "pJ", "latency_per_mvm_ns": "ns", "ref_rows": "cells", "ref_cols": "cells",
             "ref_dac_bits": "bits", "ref_adc_bits": "bits", "movement_pj_per_byte": "pJ/byte"},
}
_UNIT = re.compile(r"^([A-Za-z\u00b5%/]{1,4}),\s")


def unit_of(target: dict[str, Any], section: str, key: str) -> str | None:
    """The unit of a target key, or None (flags, counts, names)."""
    if section == "device":
        try:
            doc = device_class(target["device"]["model"]).keys()[key].doc
        except (DeviceError, KeyError):
            return None
        m = _UNIT.match(doc)
        return m.group(1) if m else None
    return UNITS.get(section, {}).get(key)


def format_section(target: dict[str, Any], section: str) -> str:
    """``g_max=25.0 uS, g_min=0.0 uS, t0=20.0 s, prog_noise=True, ...`` for one section of a target."""
    items = []
    for key, value in target[section].items():
        unit = unit_of(target, section, key)
        if unit and isinstance(value, (int, float)) and not isinstance(value, bool):
            items.append(f"{key}={value} {unit}")
        else:
            items.append(f"{key}={value}")
    return ", ".join(items)
