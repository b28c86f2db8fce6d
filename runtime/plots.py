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

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in result["compensation"]:
        rs = [r for r in result["results"] if r["compensation"] == m]
        t = np.array([max(r["t"], 1e-1) for r in rs])
        mu = np.array([100 * r["mean"] for r in rs])
        sd = np.array([100 * r["std"] for r in rs])
        (line,) = ax.plot(t, mu, marker="o", label=m)
        ax.fill_between(t, mu - sd, mu + sd, alpha=0.2, color=line.get_color())
    if "baseline" in result:
        ax.axhline(100 * result["baseline"]["accuracy"], ls="--", color="k", label="digital (onnxruntime)")
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    balanced = result.get("metric") == "balanced-accuracy"
    ax.set_ylabel("class-balanced accuracy (%)" if balanced else "accuracy (%)")
    ax.set_title(f"{Path(str(result.get('model', ''))).name} on {result.get('target')}: "
                 f"{result['results'][0]['n'] if result['results'] else 0} chips")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format=fmt)
    plt.close(fig)
