"""Retention plot: accuracy vs log time, one line per compensation with a ±std band, baseline dashed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO


def plot_retention(result: dict[str, Any], path: str | Path | BinaryIO, fmt: str | None = None) -> None:
    """Save the plot to a path (format from its suffix) or an open binary file (`fmt`: png, svg, pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from runtime.results import METRIC_LABELS, baseline_value

    metric = result.get("metric", "accuracy")
    label, pct = METRIC_LABELS.get(metric, (metric, True))
    k = 100 if pct else 1  # rel-error plotted as is (lower is better)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in result["compensation"]:
        rs = [r for r in result["results"] if r["compensation"] == m]
        t = np.array([max(r["t"], 1e-1) for r in rs])
        mu = np.array([k * r["mean"] for r in rs])
        sd = np.array([k * r["std"] for r in rs])
        (line,) = ax.plot(t, mu, marker="o", label=m)
        ax.fill_between(t, mu - sd, mu + sd, alpha=0.2, color=line.get_color())
    if "baseline" in result:
        ax.axhline(k * baseline_value(result), ls="--", color="k", label="digital (onnxruntime)")
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel(f"{label} (%)" if pct else label)
    ax.set_title(f"{Path(str(result.get('model', ''))).name} on {result.get('target')}: "
                 f"{result['results'][0]['n'] if result['results'] else 0} chips")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    plt.close(fig)
