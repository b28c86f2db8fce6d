"""`acompile eval MAPPED.onnx --data cifar10 --times 1s,1h,1d,30d,1y --chips 10 --compensation ...`

Imports only click, the standard library and the torch-free runtime.options / runtime.outputs at module
level; torch loads when the command runs, after every option and output path is checked.
`eval_options` and `run_eval` are reused by `acompile MODEL.onnx --target pcm --eval`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime import options as opt
from runtime.outputs import check_outputs, write_files

_OPTIONS = [
    click.option("--data", default="mnist", show_default=True,
                 help="mnist | fashion-mnist | cifar10 | cifar10-exact[:test-1k] | NAME:PATH | "
                      "images.npz (x, y)."),
    click.option("--times", default="1s,1h,1d,30d,1y", show_default=True, type=opt.TIMES,
                 help="Time points after programming (>= 0): seconds or 1s/1h/1d/30d/1y."),
    click.option("--chips", default=10, show_default=True, type=opt.CHIPS,
                 help=f"Simulated chips (Monte Carlo), 1..{opt.MAX_CHIPS}."),
    click.option("--compensation", default=None, type=opt.COMPENSATION,
                 help="Comma list of none, global (GDC), column, bn (AdaBS BN re-estimation), global+bn. "
                      "Default none,global,bn (bn left out for models without BatchNormalization)."),
    click.option("--seed", default=0, show_default=True, type=opt.SEED,
                 help="Seed (>= 0); (seed, chip) fixes a chip."),
    click.option("--compute", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
                 help="Where torch runs the emulation (the memory device is the target's [device])."),
    click.option("--batch-size", default=128, show_default=True, type=opt.POS_INT,
                 help="Images per batch (128 keeps a CPU batch in cache; larger suits CUDA)."),
    click.option("--limit", default=None, type=opt.POS_INT,
                 help="Evaluate on the first N (>= 1) test images."),
    click.option("--balanced", is_flag=True,
                 help="Class-balanced accuracy: the mean of per-class accuracies (classes present in the "
                      "labels), for test sets with skewed class counts such as cifar10-exact."),
    click.option("--metric", default="accuracy", show_default=True, type=click.Choice(list(opt.METRICS)),
                 help="accuracy (needs labels); agreement: share of top-1 equal to the digital model's; "
                      "rel-error: relative L2 error of the outputs vs the digital model's (lower is "
                      "better). agreement / rel-error need no labels (--data inputs.npz with just x)."),
    click.option("--calib", default=1000, show_default=True, type=opt.POS_INT,
                 help="Training images (>= 1) for bn compensation (Joshi 2020 used 2600 on CIFAR-10)."),
    click.option("--calib-augment", default="auto", show_default=True,
                 type=click.Choice(list(opt.CALIB_AUGMENT)),
                 help="bn compensation re-estimates BN statistics on training images augmented as in "
                      "training (crop-flip: random crop of the 4-pixel zero-padded image + flip), or as "
                      "they are (none); auto = crop-flip for 32x32 RGB images."),
    click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                 help="Write the results (every chip's accuracy, settings) as JSON (.json)."),
    click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                 help="Write one row per time and compensation as CSV (.csv)."),
    click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                 help="Retention plot (.png, .svg or .pdf)."),
    click.option("--mean", default=None, type=opt.FLOATS, help="Override preprocessing mean (comma list)."),
    click.option("--std", default=None, type=opt.POS_FLOATS,
                 help="Override preprocessing std (comma list, each > 0)."),
    click.option("--scale", default=None, type=opt.POS_FLOAT,
                 help="Override preprocessing pixel scale (1/255)."),
    click.option("--no-prog-noise", is_flag=True, help="Turn programming noise off."),
    click.option("--no-drift", is_flag=True, help="Turn conductance drift off."),
    click.option("--no-read-noise", is_flag=True, help="Turn 1/f read noise off."),
    click.option("--read-noise", "read_noise_mode", default="time", show_default=True,
                 type=click.Choice(["time", "read"]),
                 help="time: one sample per time point (aihwkit); read: fresh per MVM."),
    click.option("--dac-bits", default=None, type=opt.BITS, help="Override DAC bits (0 = ideal, or 2..16)."),
    click.option("--adc-bits", default=None, type=opt.BITS, help="Override ADC bits (0 = ideal, or 2..16)."),
    click.option("--out-noise", default=None, type=opt.NONNEG_FLOAT,
                 help="Override output noise (normalized, >= 0)."),
    click.option("--out-bound", default=None, type=opt.BOUND,
                 help="Override the ADC output bound: a number (normalized units) or 'calibrated' (per "
                      "layer, from the calibration images right after programming)."),
    click.option("--input-range", default=None, type=opt.POS_FLOAT,
                 help="Static DAC input range, > 0 (default: calibrated)."),
    click.option("--r-wire", "r_wire", default=None, type=opt.NONNEG_FLOAT,
                 help="Override the wire resistance per row / column segment of a tile, ohm (IR drop; "
                      "0 = off; aihwkit's value is 0.35)."),
    click.option("--kernels", default="auto", show_default=True,
                 type=click.Choice(["auto", "native", "torch"]),
                 help="Element-wise DAC/ADC/noise on CPU: native (C, built at first use), torch, or auto "
                      "(native when a C compiler works)."),
    click.option("--threads", default=None, type=opt.THREADS,
                 help=f"torch / onnxruntime CPU threads, 1..{opt.MAX_THREADS}."),
    click.option("--no-baseline", is_flag=True, help="Skip the onnxruntime digital baseline."),
    click.option("--workers", default=None, type=opt.WORKERS,
                 help="Run the chips on a local Ray instance of N CPUs (needs the ray extra); the same "
                      "numbers as the serial run."),
    click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
                 help="Run the chips on a running Ray cluster (`ray start --head`; auto = this node's)."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
]

EVAL_PARAMS = ("data", "times", "chips", "compensation", "seed", "compute", "batch_size", "limit", "balanced",
               "metric", "calib", "json_path", "csv_path", "plot_path", "mean", "std", "scale",
               "no_prog_noise", "no_drift", "no_read_noise", "read_noise_mode", "dac_bits", "adc_bits",
               "out_noise", "out_bound", "input_range", "r_wire", "kernels", "threads", "no_baseline",
               "workers", "ray_address", "quiet")


def eval_options(fn: Callable) -> Callable:
    """Decorator adding every `acompile eval` option to a click command."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


#: eval's output flags -> their keyword
OUTPUT_FLAGS = {"--json": "json_path", "--csv": "csv_path", "--plot": "plot_path"}
#: options whose values the option types check when run_eval is called directly (not through click)
_TYPES = {"times": opt.TIMES, "chips": opt.CHIPS, "compensation": opt.COMPENSATION, "seed": opt.SEED,
          "batch_size": opt.POS_INT, "limit": opt.POS_INT, "calib": opt.POS_INT, "mean": opt.FLOATS,
          "std": opt.POS_FLOATS, "scale": opt.POS_FLOAT, "dac_bits": opt.BITS, "adc_bits": opt.BITS,
          "out_noise": opt.NONNEG_FLOAT, "out_bound": opt.BOUND, "input_range": opt.POS_FLOAT,
          "r_wire": opt.NONNEG_FLOAT,
          "threads": opt.THREADS, "workers": opt.WORKERS}
_DEFAULTS = {"data": "mnist", "times": "1s,1h,1d,30d,1y", "chips": 10, "seed": 0, "compute": "cpu",
             "batch_size": 128, "calib": 1000, "read_noise_mode": "time", "kernels": "auto",
             "metric": "accuracy"}


def eval_outputs(kw: dict[str, Any]) -> dict[str, Any]:
    """{flag: path} of the outputs an eval run with these options writes (None: not asked)."""
    return {flag: kw.get(key) for flag, key in OUTPUT_FLAGS.items()}


def data_file(data: str | None) -> str | None:
    """The file behind --data (FILE.npz or NAME:FILE), an input no output may overwrite."""
    if not data:
        return None
    path = data.partition(":")[2] if ":" in data and not Path(data).exists() else data
    return path if Path(path).is_file() else None


def check_eval(mapped_path: Path, kw: dict[str, Any]) -> dict[str, Any]:
    """Every option and output of an eval run, checked before torch loads; returns the options resolved
    (defaults filled in, strings of a direct call parsed by the same option types)."""
    from runtime.errors import AcompileError

    kw = {k: v for k, v in kw.items() if v is not None}
    for key, default in _DEFAULTS.items():
        kw.setdefault(key, default)
    for key, ptype in _TYPES.items():
        if key in kw:
            kw[key] = ptype.convert(kw[key], _FakeParam(key), None)
    if kw["compute"] not in ("cpu", "cuda"):
        raise AcompileError(f"--compute must be cpu or cuda, got {kw['compute']!r}")
    opt.same_length(kw.get("mean"), kw.get("std"))
    opt.check_metric(kw["metric"], bool(kw.get("balanced")))
    from runtime.parallel import check_parallel

    check_parallel(kw.get("workers"), kw.get("ray_address"))
    check_outputs(eval_outputs(kw), inputs=[mapped_path, data_file(kw.get("data"))])
    return kw


class _FakeParam:
    """Names the flag in messages when run_eval checks keyword arguments itself."""

    def __init__(self, key: str) -> None:
        self.opts = ["--" + key.replace("_", "-")]
        self.name = key


def run_eval(mapped_path: Path, **kw: Any) -> dict:
    """Run the retention experiment from eval options; print the table, write JSON/CSV/plot as one set.

    Options and output paths are checked first (`check_eval`): a bad one costs no evaluation."""
    kw = check_eval(Path(mapped_path), kw)
    from runtime.evaluate import EvalConfig, evaluate
    from runtime.results import csv_text, json_text, table

    overrides: dict[str, Any] = {
        "prog_noise": False if kw.get("no_prog_noise") else None,
        "drift": False if kw.get("no_drift") else None,
        "read_noise": False if kw.get("no_read_noise") else None,
        "read_noise_mode": kw["read_noise_mode"],
        "dac_bits": kw.get("dac_bits"), "adc_bits": kw.get("adc_bits"),
        "out_noise": kw.get("out_noise"), "out_bound": kw.get("out_bound"),
        "input_range": kw.get("input_range"), "r_wire": kw.get("r_wire"), "kernels": kw["kernels"],
    }
    cfg = EvalConfig(
        data=kw["data"], times=kw["times"], chips=kw["chips"],
        compensation=kw.get("compensation") or ["none", "global", "bn"],
        compensation_given=bool(kw.get("compensation")),
        seed=kw["seed"], compute=kw["compute"], batch_size=kw["batch_size"], limit=kw.get("limit"),
        calib=kw["calib"], calib_augment=kw.get("calib_augment", "auto"),
        mean=kw.get("mean"), std=kw.get("std"), scale=kw.get("scale"),
        overrides=overrides, baseline=not kw.get("no_baseline"), threads=kw.get("threads"),
        balanced=bool(kw.get("balanced")), metric=kw["metric"])
    runner = None
    if kw.get("workers") is not None or kw.get("ray_address") is not None:
        from runtime.parallel import ray_chip_runner

        runner = ray_chip_runner(kw.get("workers"), kw.get("ray_address"))
    result = evaluate(Path(mapped_path), cfg, progress=not kw.get("quiet"), chip_runner=runner)
    click.echo(table(result))
    files: dict[Path, Any] = {}
    if kw.get("json_path"):
        files[Path(kw["json_path"])] = json_text(result)
    if kw.get("csv_path"):
        files[Path(kw["csv_path"])] = csv_text(result)
    if kw.get("plot_path"):
        from runtime.plots import plot_retention

        plot = Path(kw["plot_path"])
        files[plot] = lambda f: plot_retention(result, f, fmt=plot.suffix[1:].lower())
    write_files(files)
    return result


@click.command("eval")
@click.argument("mapped", type=click.Path(dir_okay=False, path_type=Path))
@eval_options
def eval_cmd(mapped: Path, **kw: Any) -> None:
    """Accuracy retention of a mapped model (*.pcm.onnx) over simulated time, chips and compensation.

    Outputs (--json, --csv, --plot) are checked before the run and written together at its end; their
    folders are created when missing.
    """
    run_eval(mapped, **kw)
