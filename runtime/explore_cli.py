"""`acompile explore MODEL.onnx --set adc_bits=4,6,8 --set tile=128x128,256x256 --times 1d,1y --out DIR`

Design-space exploration: the product of the `--set` knobs over a base `--target`, each variant compiled
in memory and emulated on `--chips` chips (runtime/explore.py), serially or on Ray (`--workers N`, `--ray
ADDRESS|auto`). CLI-level: it composes the compiler (targets, mapping) and the runtime. Every option, knob
and output is checked before torch loads; a bad one is one line, exit 2.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Any

import click

from runtime import options as opt
from runtime.errors import AcompileError

#: sections whose keys `--set` may change ([device] keys come from the device models)
SECTIONS = ("tile", "device", "periphery", "mapping", "cost")
#: knobs that are not one TOML key
SPECIAL = {"tile": "tile size RxC ([tile].rows and cols)", "device": "the device model ([device].model)"}
MAX_VARIANTS = 10_000


def _scalar(text: str) -> Any:
    """A --set value as TOML would read it: true/false, an integer, a number, else the string."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def parse_sets(specs: tuple[str, ...] | list[str]) -> list[tuple[str, list[str]]]:
    """['adc_bits=4,6,8', 'tile=128x128'] -> [('adc_bits', ['4', '6', '8']), ('tile', ['128x128'])]."""
    out: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, eq, values = str(spec).partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key:
            raise AcompileError(f"--set {spec!r}: use KEY=V1,V2,... (e.g. adc_bits=4,6,8)")
        if not vals:
            raise AcompileError(f"--set {spec!r}: no values given")
        if len(set(vals)) != len(vals):
            raise AcompileError(f"--set {spec!r}: a value is given twice")
        if any(k == key for k, _ in out):
            raise AcompileError(f"--set {key}: the key is given twice (one --set per key)")
        out.append((key, vals))
    return out


Knob = tuple[str, str, str, list[Any]]  # (name as given, section, key, values)


def resolve_knobs(base: dict[str, Any], sets: list[tuple[str, list[str]]]) -> list[Knob]:
    """Each knob -> (name, section, key, values): the section its key belongs to (unambiguous), values
    parsed and checked by the target schema (the same checks as a TOML file)."""
    from compiler.targets import SCHEMA, parse_tile
    from runtime.physics.devices import DeviceError, device_class, device_names

    models = [base["device"]["model"]]
    for key, vals in sets:
        if key in ("device", "device.model"):
            for v in vals:
                if v not in device_names():
                    raise AcompileError(f"--set {key}: unknown device model {v!r} "
                                        f"(use {', '.join(device_names())})")
            models = list(vals)
    device_keys: set[str] = set()
    for m in models:
        device_keys |= set(device_class(m).keys())
    where: dict[str, list[str]] = {}
    for section in SECTIONS:
        keys = device_keys if section == "device" else set(SCHEMA[section])
        for k in keys:
            where.setdefault(k, []).append(section)
    knobs = []
    for name, vals in sets:
        if name in ("tile", "device", "device.model"):
            if name == "tile":
                parsed = []
                for v in vals:
                    r, c = parse_tile(v)
                    parsed.append(f"{r}x{c}")
                knobs.append(("tile", "tile", "*", parsed))
            else:
                knobs.append((name, "device", "model", list(vals)))
            continue
        section, dot, key = name.rpartition(".")
        if dot:
            if section not in SECTIONS or key not in where or section not in where[key]:
                raise AcompileError(f"--set {name}: no key {key!r} in [{section}]"
                                    + _closest(name, where))
            sections = [section]
        else:
            key = name
            sections = where.get(key, [])
            if not sections:
                raise AcompileError(f"--set {name}: unknown target key" + _closest(name, where))
            if len(sections) > 1:
                raise AcompileError(f"--set {name}: the key is in several sections; write one of "
                                    + ", ".join(f"{s}.{key}" for s in sections))
            section = sections[0]
        values = [_scalar(v) for v in vals]
        for v in values:
            if section == "device":
                for m in models:
                    cls = device_class(m)
                    if key not in cls.keys():
                        raise AcompileError(f"--set {name}: device model {m!r} has no key {key!r} "
                                            f"(its keys: {', '.join(cls.keys())})")
                    try:
                        cls.resolve({key: v})
                    except DeviceError as exc:
                        raise AcompileError(f"--set {name}={v}: {exc}") from None
            else:
                need = SCHEMA[section][key](v)
                if need is not None:
                    raise AcompileError(f"--set {name}={v}: [{section}].{key} must be {need}")
        knobs.append((name, section, key, values))
    return knobs


def _closest(name: str, where: dict[str, list[str]]) -> str:
    names = sorted(set(where) | set(SPECIAL) | {f"{s}.{k}" for k, ss in where.items() for s in ss})
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    if close:
        return f" (closest: {', '.join(close)})"
    return f" (known: {', '.join(sorted(set(where) | set(SPECIAL)))})"


def variant_target(base: dict[str, Any], knobs: list[Knob],
                   values: tuple[Any, ...]) -> dict[str, Any]:
    """The resolved target of one grid point (device model first, then device keys, then the rest)."""
    import copy

    from compiler.targets import with_device

    t = copy.deepcopy(base)
    dev_model = None
    dev_keys: dict[str, Any] = {}
    for (_name, section, key, _), v in zip(knobs, values, strict=True):
        if section == "device":
            if key == "model":
                dev_model = v
            else:
                dev_keys[key] = v
        elif section == "tile" and key == "*":
            r, c = (int(p) for p in str(v).split("x"))
            t["tile"]["rows"], t["tile"]["cols"] = r, c
        else:
            t[section][key] = v
    if dev_model is not None or dev_keys:
        try:
            t = with_device(t, dev_model, **dev_keys)
        except AcompileError as exc:
            raise AcompileError(f"--set: {exc}") from None
    names = [f"{n}={v}" for (n, *_), v in zip(knobs, values, strict=True)]
    t["name"] = f"{base.get('name')}[{' '.join(names)}]"
    return t


@click.command("explore")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=V1,V2,...",
              help="A target key and its values (several --set: their product), e.g. adc_bits=4,6,8, "
                   "tile=128x128,256x256, device=pcm,rram, out_noise=0.02,0.04, prog_noise_scale=1,2, "
                   "drift=true,false; SECTION.KEY where a key is in several sections.")
@click.option("--target", "-t", "target_spec", default="pcm", show_default=True,
              help="Base target: built-in name or a TOML file.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.jsonl (a line per variant x time x compensation x chip, appended as "
                   "units finish) and summary.json / summary.csv / summary.png.")
@click.option("--resume", is_flag=True, help="Continue the run in --out: skip the units already there.")
@click.option("--data", default="mnist", show_default=True,
              help="mnist | fashion-mnist | cifar10 | cifar10-exact[:test-1k] | NAME:PATH | images.npz.")
@click.option("--times", default="1d,1y", show_default=True, type=opt.TIMES,
              help="Time points after programming: seconds or 1s/1h/1d/30d/1y.")
@click.option("--chips", default=5, show_default=True, type=opt.CHIPS, help="Simulated chips per variant.")
@click.option("--compensation", default="none,global", show_default=True, type=opt.COMPENSATION,
              help="Comma list of none, global, column, bn, global+bn.")
@click.option("--seed", default=0, show_default=True, type=opt.SEED,
              help="Seed (>= 0); (seed, chip) fixes a chip's noise in every variant.")
@click.option("--limit", default=None, type=opt.POS_INT, help="Evaluate on the first N test images.")
@click.option("--calib", default=1000, show_default=True, type=opt.POS_INT,
              help="Training images for bn compensation.")
@click.option("--metric", default="accuracy", show_default=True, type=click.Choice(list(opt.METRICS)),
              help="accuracy (needs labels), or agreement / rel-error against the digital model's outputs "
                   "(no labels needed), as in `acompile eval --metric`.")
@click.option("--batch-size", default=128, show_default=True, type=opt.POS_INT, help="Images per batch.")
@click.option("--threads", default=None, type=opt.THREADS, help="torch CPU threads of the serial run.")
@click.option("--workers", default=None, type=opt.WORKERS,
              help="Run the units on a local Ray instance of N CPUs (needs the ray extra).")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help="Run the units on a running Ray cluster (`ray start --head`; auto = this node's).")
@click.option("--no-baseline", is_flag=True, help="Skip the onnxruntime digital baseline.")
@click.option("--quiet", "-q", is_flag=True, help="No progress report.")
def explore_cmd(model: Path, sets: tuple[str, ...], target_spec: str, out_dir: Path, resume: bool, data: str,
                times: list[float], chips: int, compensation: list[str], seed: int, limit: int | None,
                calib: int, metric: str, batch_size: int, threads: int | None, workers: int | None,
                ray_address: str | None, no_baseline: bool, quiet: bool) -> None:
    """Accuracy over a grid of hardware variants: the product of the --set knobs over --target.

    \b
      acompile explore models/lenet5-mnist.onnx --set adc_bits=4,6,8 --set tile=128x128,256x256 \\
          --times 1d,1y --chips 5 --workers 2 --out runs/x
    """
    run_explore(model, sets=sets, target_spec=target_spec, out_dir=out_dir, resume=resume, data=data,
                times=times, chips=chips, compensation=compensation, seed=seed, limit=limit, calib=calib,
                metric=metric, batch_size=batch_size, threads=threads, workers=workers,
                ray_address=ray_address, baseline=not no_baseline, quiet=quiet)


def run_explore(model: Path, *, sets: tuple[str, ...] | list[str], target_spec: str = "pcm", out_dir: Path,
                resume: bool = False, data: str = "mnist", times: list[float] | None = None, chips: int = 5,
                compensation: list[str] | None = None, seed: int = 0, limit: int | None = None,
                calib: int = 1000, metric: str = "accuracy", batch_size: int = 128,
                threads: int | None = None, workers: int | None = None, ray_address: str | None = None,
                baseline: bool = True, quiet: bool = False) -> dict[str, Any]:
    """The command's work (also callable directly, e.g. from tests with a Ray already running)."""
    import onnx

    from compiler.targets import load_target
    from runtime.cli import data_file
    from runtime.explore import Variant, output_paths
    from runtime.outputs import check_outputs
    from runtime.parallel import check_parallel

    # ---- every option, knob and output before any work ------------------------------------------------
    model = Path(model)
    if not model.is_file():
        raise AcompileError(f"model {str(model)!r}: file not found")
    times = times if times is not None else [86400.0, 365 * 86400.0]
    compensation = compensation or ["none", "global"]
    check_parallel(workers, ray_address)
    opt.check_metric(metric)
    if not sets:
        raise AcompileError("give at least one --set KEY=V1,V2,... (e.g. --set adc_bits=4,6,8)")
    base = load_target(target_spec)
    knobs = resolve_knobs(base, parse_sets(sets))
    grid = list(itertools.product(*(vals for *_, vals in knobs)))
    if len(grid) > MAX_VARIANTS:
        raise AcompileError(f"--set: {len(grid)} variants, more than {MAX_VARIANTS}")
    targets = [variant_target(base, knobs, vals) for vals in grid]  # checks every combination
    paths = output_paths(out_dir)
    check_outputs({"--out results": paths["results"], "--out summary.json": paths["json"],
                   "--out summary.csv": paths["csv"], "--out summary.png": paths["plot"]},
                  inputs=[model, target_spec if Path(target_spec).is_file() else None, data_file(data)])
    if paths["results"].exists() and paths["results"].stat().st_size > 0 and not resume:
        raise AcompileError(f"--out: {paths['results']} exists (a run there already): add --resume to "
                            "continue it, or give another --out")
    if "bn" in compensation or "global+bn" in compensation:
        try:
            ops = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
        except Exception:  # noqa: BLE001 - the compile names the problem properly later
            ops = {"BatchNormalization"}
        if "BatchNormalization" not in ops:
            raise AcompileError("--compensation bn: the model has no BatchNormalization nodes")

    variants = [Variant(" ".join(f"{n}={v}" for (n, *_), v in zip(knobs, vals, strict=True)),
                        {n: v for (n, *_), v in zip(knobs, vals, strict=True)}) for vals in grid]
    target_of = {v.key: t for v, t in zip(variants, targets, strict=True)}
    config = {"model": str(model), "target": base.get("name"), "knobs": {n: vals for n, *_, vals in knobs},
              "times": times, "compensation": compensation, "seed": seed, "data": data, "limit": limit,
              "calib": calib, "batch_size": batch_size, "chips": chips}
    if metric != "accuracy":  # absent for accuracy: results files of earlier runs still --resume
        config["metric"] = metric

    from runtime.evaluate import EvalConfig
    from runtime.explore import explore, table

    def compile_variant(v: Variant):
        from compiler.pipeline import map_model

        mapped, _report = map_model(model, target_of[v.key])
        return mapped

    cfg = EvalConfig(data=data, times=times, chips=chips, compensation=compensation, compensation_given=True,
                     seed=seed, batch_size=batch_size, limit=limit, calib=calib, baseline=baseline,
                     threads=threads, metric=metric)

    def say(text: str) -> None:
        if not quiet:
            click.echo(f"acompile: {text}", err=True)

    summary = explore(variants, compile_variant, cfg, config, Path(out_dir), resume=resume, workers=workers,
                      address=ray_address, progress=not quiet, say=say)
    click.echo(table(summary))
    written = [paths["results"], paths["json"], paths["csv"]]
    if paths["plot"].exists() and len(summary["knob_names"]) in (1, 2):
        written.append(paths["plot"])
    click.echo("wrote: " + ", ".join(str(p) for p in written))
    return summary
