"""`acompile sweep`: accuracy of in-memory training as one device parameter varies (Gokmen-style plot).

Imports only click and the torch-free option / output modules at module level; every option, parameter
value and output path is checked before torch and the training code load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import click

from hwtrain.inmemory.params import training_devices
from runtime import options as opt
from runtime.errors import AcompileError
from runtime.outputs import check_outputs, write_files


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    """'states=100,300,1000' -> ('states', [100.0, 300.0, 1000.0])."""
    name, sep, values = spec.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise AcompileError(f"--param must look like NAME=v1,v2,..., got {spec!r}")
    vals = opt.parse_floats(values, f"--param {name.strip()}")
    return name.strip(), vals


def run_sweep(model: str, dataset: str, algorithm: str, device: str, name: str, values: list[float], *,
              fixed: dict[str, float], epochs: int, batch_size: int, lr: float | None, seed: int,
              compute: str = "cpu") -> list[dict]:
    """One training run per value; returns rows {name: value, test_accuracy, seconds_per_epoch}."""
    from hwtrain.inmemory.run import train_inmemory

    rows = []
    for v in values:
        m = train_inmemory(model, dataset, algorithm, device, epochs, params={**fixed, name: v},
                           batch_size=batch_size, lr=lr, seed=seed, out=None, json_path=None, resume=None,
                           compute=compute)
        rows.append({name: v, "test_accuracy": m["test_accuracy"],
                     "seconds_per_epoch": m["seconds_per_epoch"]})
        click.echo(f"{name}={v:g}: test accuracy {100 * m['test_accuracy']:.2f} %", err=True)
    return rows


def plot_sweep(rows: list[dict], name: str, title: str, path: Path | BinaryIO,
               fmt: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xs = [r[name] for r in rows]
    ax.plot(xs, [100 * r["test_accuracy"] for r in rows], "o-")
    if name in ("states", "dw_min") and min(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    plt.close(fig)


@click.command("sweep")
@click.argument("model")
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--algorithm", default="sgd", show_default=True,
              type=click.Choice(["mixed-precision", "sgd", "ttv2", "cttv2", "agad", "fp32"]))
@click.option("--device", default="softbounds", show_default=True,
              type=click.Choice(training_devices()))
@click.option("--param", "sweep", required=True, help="NAME=v1,v2,... the parameter to sweep")
@click.option("--set", "fixed", default="", help="NAME=VALUE,... parameters held fixed")
@click.option("--epochs", default=1, show_default=True, type=opt.POS_INT)
@click.option("--limit", default=0, type=opt.NONNEG_INT, help="train on the first N images only (0 = all)")
@click.option("--test-limit", default=0, type=opt.NONNEG_INT,
              help="test on the first N images only (0 = all)")
@click.option("--batch-size", default=25, show_default=True, type=opt.POS_INT)
@click.option("--lr", default=None, type=opt.POS_FLOAT)
@click.option("--seed", default=0, show_default=True, type=opt.SEED)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows as JSON (.json); missing folders are created.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Accuracy vs the parameter (.png, .svg or .pdf).")
@click.option("--compute", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="torch device")
def sweep_cmd(model: str, dataset: str, algorithm: str, device: str, sweep: str, fixed: str, epochs: int,
              limit: int, test_limit: int, batch_size: int, lr: float | None, seed: int,
              json_path: Path | None, plot_path: Path | None, compute: str) -> None:
    """Train MODEL in memory once per value of one device parameter and tabulate test accuracy.

    \b
      acompile sweep mlp --dataset mnist --algorithm sgd --device softbounds \\
          --param states=100,300,1000,3000 --limit 10000 --plot states.png
    """
    from hwtrain.inmemory.params import parse_assignments, resolve

    name, values = parse_sweep(sweep)
    fixed_params = parse_assignments(fixed)
    if limit:
        fixed_params["limit"] = limit
    if test_limit:
        fixed_params["test_limit"] = test_limit
    for v in values:  # every run's parameters, before the first one trains
        resolve({**fixed_params, name: v})
    check_outputs({"--json": json_path, "--plot": plot_path},
                  [dataset if dataset.endswith(".npz") else None])
    rows = run_sweep(model, dataset, algorithm, device, name, values, fixed=fixed_params, epochs=epochs,
                     batch_size=batch_size, lr=lr, seed=seed, compute=compute)
    click.echo(f"| {name} | test accuracy (%) |\n| ---: | ---: |")
    for r in rows:
        click.echo(f"| {r[name]:g} | {100 * r['test_accuracy']:.2f} |")
    files: dict[Path, Any] = {}
    if json_path:
        files[json_path] = json.dumps({"schema": "acompile.sweep/1", "model": model, "dataset": dataset,
                                       "algorithm": algorithm, "device": device, "param": name,
                                       "fixed": fixed_params, "epochs": epochs, "rows": rows}, indent=2)
    if plot_path:
        title, fmt = f"{model} {dataset}: {algorithm} on {device}", plot_path.suffix[1:].lower()
        files[plot_path] = lambda f: plot_sweep(rows, name, title, f, fmt)
    write_files(files)
