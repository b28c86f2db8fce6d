"""PNG picture of tile occupancy: a grid of tiles, each block drawn where it sits, colored per layer."""

from __future__ import annotations

import io
import math
from typing import Any

MAX_TILES_DRAWN = 400


def render_png(report: dict[str, Any]) -> bytes:
    """Draw up to MAX_TILES_DRAWN tiles (the rest are counted in the title). Agg backend, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    R, C = report["tile"]["rows"], report["tile"]["cols"]
    n_tiles = report["totals"]["tiles"]
    shown = min(n_tiles, MAX_TILES_DRAWN)
    ncols = max(1, min(16, math.ceil(math.sqrt(max(shown, 1)))))
    nrows = max(1, math.ceil(max(shown, 1) / ncols))
    analog_names = [ly["name"] for ly in report["layers"] if ly["analog"]]
    cmap = plt.get_cmap("tab20")
    colors = {name: cmap(i % 20) for i, name in enumerate(analog_names)}
    fig, ax = plt.subplots(figsize=(min(2 + 1.0 * ncols, 18), min(1.5 + 1.0 * nrows, 30)))
    gap = 0.12
    bg, fg, fg_colors = [], [], []
    for t in range(shown):
        gx, gy = t % ncols, t // ncols
        bg.append(Rectangle((gx * (1 + gap), -gy * (1 + gap) - 1), 1, 1))
    for b in report.get("blocks", []):
        t = b["tile"]
        if t >= shown:
            continue
        gx, gy = t % ncols, t // ncols
        x0 = gx * (1 + gap) + b["tile_col"] / C
        y_top = -gy * (1 + gap)
        h = (b["row_end"] - b["row_start"]) / R
        w = (b["col_end"] - b["col_start"]) / C
        fg.append(Rectangle((x0, y_top - b["tile_row"] / R - h), w, h))
        fg_colors.append(colors.get(b["layer"], "#999"))
    # collections, not one artist per rectangle: hundreds of tiles draw in well under a second
    ax.add_collection(PatchCollection(bg, facecolor="#f0f0f0", edgecolor="#888", linewidth=0.5))
    if fg:
        ax.add_collection(PatchCollection(fg, facecolor=fg_colors, edgecolor="k", linewidth=0.2))
    ax.set_xlim(-gap, ncols * (1 + gap))
    ax.set_ylim(-nrows * (1 + gap), gap)
    ax.set_aspect("equal")
    ax.axis("off")
    more = f", first {shown} drawn" if shown < n_tiles else ""
    t = report["totals"]
    ax.set_title(f"{report['model']} on {report['target']}: {n_tiles} tiles of {R}x{C}{more}, "
                 f"utilization {100 * t['utilization']:.1f} %", fontsize=9)
    if len(analog_names) <= 24:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=colors[n], label=n) for n in analog_names], fontsize=6,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
