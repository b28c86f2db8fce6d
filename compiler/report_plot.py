"""PNG picture of the tile mapping: every physical tile, each block drawn where it sits.

Layout, top to bottom: a title, a summary band (tiles, chips, utilization, layers, devices, cost), the
tile grid (one square per tile, numbered by the axes: the first tile index of each row on the left, the
column offset along the top; chips marked on the right), and a key of the analog layers. A layer is
drawn in a colour of its own and labelled with its index ``L12`` inside its blocks, so 50+ layers stay
apart: 20 colours, and after 20 layers the same colours again with a hatch (20 x 5 combinations). The
grid shows every tile (no cap); labels and hatches are left out where tiles get too small to hold them.
Placement (compiler/placement.py): the cores holding copies of a layer's weights (``--duplicate``) are
drawn in the layer's colour under a white hatch and labelled ``L3'1`` (copy 1 of L3); the bottleneck
layer's cores have a red outline; the summary band names the bottleneck, the pipelined and layer-by-layer
throughput, the energy with data movement and the peak figures.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any

# tab20 with the dark shade of each hue first: neighbouring layers differ in hue, not only in shade
_ORDER = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
HATCHES = ("", "///", "...", "xxx", "\\\\\\")
GAP = 0.12  # between tiles, in tile widths
MAX_KEY = 120  # layers listed in the key (the Markdown/JSON report lists them all)


def layer_style(i: int) -> tuple[tuple[float, float, float, float], str]:
    """(colour, hatch) of analog layer ``i``: 20 colours, then the same with each of 4 hatches."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return cmap(_ORDER[i % 20]), HATCHES[(i // 20) % len(HATCHES)]


def _ncols(n_tiles: int, per_chip: int) -> int:
    """Tiles per grid row: 16 up to 512 tiles, then wider; a divisor of tiles_per_chip when one is near,
    so that chips are whole rows."""
    want = 16 if n_tiles <= 512 else 32 if n_tiles <= 4096 else 64
    want = min(want, max(n_tiles, 1))
    for c in range(want, max(want // 2, 1) - 1, -1):
        if per_chip % c == 0 and c >= min(8, want):
            return c
    return want


def _fmt(n: float) -> str:
    return f"{n:,}" if isinstance(n, int) else f"{n:,.2f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary band's lines (totals of the mapping)."""
    t = report["totals"]
    R, C = report["tile"]["rows"], report["tile"]["cols"]
    chips = t["chips"]
    lines = [
        f"{_fmt(t['tiles'])} tiles of {R}x{C} on {chips} chip{'s' if chips != 1 else ''} "
        f"({report['tiles_per_chip']} tiles/chip)   |   utilization {100 * t['utilization']:.1f} %   |   "
        f"{_fmt(t['devices'])} devices ({report['devices_per_weight']} per weight)",
        f"{t['analog_layers']} analog layers ({_fmt(t.get('weights_analog', 0))} weights), "
        f"{t['digital_layers']} digital layers, {t['digital_ops']} digital ops   |   weight scale per "
        f"{report['weight_scale']}   |   packing {'on' if report['packed'] else 'off'}"
        + (f" ({t['tiles_saved_by_packing']} tiles saved)" if report["packed"] else ""),
        f"per inference (batch 1): ~{t['energy_per_inference_uj']:,.2f} uJ, "
        f"~{t['latency_per_inference_us']:,.2f} us ({t.get('tile_mvms_per_inference', 0):,} tile MVMs)",
        *_cost_detail(report),
        *_placement_detail(report),
    ]
    if not report.get("eval_supported", True):
        lines.append("acompile eval cannot run this model (see the report's warnings)")
    return lines


def _cost_detail(report: dict[str, Any]) -> list[str]:
    """The cost model in a line: the energy split, one MVM's figures and what they scale with (nothing
    for reports written before the cost model)."""
    t, cm = report["totals"], report["cost_model"]
    split, lat = t.get("energy_breakdown_uj"), cm.get("mvm_latency_ns")
    if not split or not lat or "full_tile_mvm_pj" not in cm:
        return []
    R, C = report["tile"]["rows"], report["tile"]["cols"]
    bits = cm["costed_bits"]
    return ["energy by term: " + ", ".join(f"{k} {v:,.2f}" for k, v in split.items()) + " uJ   |   "
            f"cost model: a full {R}x{C} MVM at {bits['dac']}/{bits['adc']}-bit DAC/ADC = "
            f"{cm['full_tile_mvm_pj']:,.0f} pJ, {lat['mvm']:.0f} ns; partial blocks cost the rows, "
            "columns and converters they use; a layer's tiles in parallel, layers in sequence"]


def _placement_detail(report: dict[str, Any]) -> list[str]:
    """Pipelining, duplication and the peak figures in two lines (nothing for reports without them)."""
    pl, pf = report.get("placement"), report.get("performance")
    if not pl or not pf:
        return []
    stage = {st["layer"]: st["stage"] for st in pl["stages"]}
    b = pl["bottleneck"]["layer"]
    base = pl["without_duplication"]["pipelined"]["throughput_ips"]
    pipe, lbl = pl["pipelined"], pl["layer_by_layer"]
    line = (f"pipelined (layer = stage, {len(pl['stages'])} stages): ~{pipe['throughput_ips']:,.0f} "
            f"inferences/s, bottleneck L{stage.get(b, '?')} {b} (red outline); layer by layer: "
            f"~{lbl['throughput_ips']:,.0f}/s; latency {pipe['latency_us']:,.1f} us")
    if pl["copies_added"]:
        line += (f"   |   --duplicate {pl['duplicate']}: {pl['copies_added']} weight copies (hatched, L3'1 = "
                 f"copy 1 of L3), x{pl['speedup_pipelined']:.2f} over {base:,.0f}/s without")
    else:
        line += f"   |   --duplicate {pl['duplicate']}: no copies"
    peak = pf["peak"]
    line2 = (f"energy with data movement {pf['energy_per_inference_uj']:,.2f} uJ ("
             + ", ".join(f"{k} {v:,.2f}" for k, v in pf["energy_breakdown_uj"].items()) + " uJ)   |   peak: "
             + ", ".join(f"{m} {f['tops']:.1f} TOPS / {f['tops_per_w']:.2f} TOPS/W" for m, f in peak.items()))
    return [line, line2]


def render_png(report: dict[str, Any]) -> bytes:
    """The tile map as PNG bytes (Agg backend, no display)."""
    import matplotlib.pyplot as plt

    fig = figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def figure(report: dict[str, Any]):
    """The tile map as a matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    R, C = report["tile"]["rows"], report["tile"]["cols"]
    per_chip = max(int(report.get("tiles_per_chip", 64)), 1)
    n_tiles = int(report["totals"]["tiles"])
    placement = report.get("placement") or {}
    copies = [c for c in placement.get("cores", []) if c["copy"]]
    bottleneck = (placement.get("bottleneck") or {}).get("layer")
    if copies:  # the grid shows the cores the copies took too
        n_tiles = max(n_tiles, max(c["core"] for c in copies) + 1)
    analog = [ly for ly in report["layers"] if ly["analog"]]
    index = {ly["name"]: i for i, ly in enumerate(analog)}
    ncols = _ncols(n_tiles, per_chip)
    nrows = max(1, math.ceil(n_tiles / ncols))

    # sizes in inches: a tile cell shrinks for big models so the figure stays printable
    if nrows <= 4:  # a few tiles: large enough to see packed blocks
        cell = min(1.1, max(0.52, 8.5 / ncols))
    else:
        cell = 0.52 if n_tiles <= 512 else max(0.12, min(0.52, 26.0 / nrows, 16.0 / ncols))
    detail = cell >= 0.3  # room for labels and hatches inside tiles
    grid_w, grid_h = ncols * cell, nrows * cell
    left, right = 1.0, 1.1  # axis label + row indices; chip labels
    fig_w = max(grid_w + left + right, 9.0)
    title = textwrap.wrap(f"Tile map: {report['model']} on target {report['target']}", 90) or [""]
    lines = summary_lines(report)
    wrap = max(60, int(fig_w * 13))
    lines = [w for line in lines for w in textwrap.wrap(line, wrap)]
    head_h = 0.35 + 0.3 * len(title) + 0.2 * len(lines) + 0.2
    key_layers = analog[:MAX_KEY]
    key_cols = max(1, min(4, int(fig_w // 3.2)))
    key_rows = math.ceil(len(key_layers) / key_cols) if key_layers else 0
    key_h = (0.3 + 0.155 * key_rows + (0.2 if len(analog) > MAX_KEY else 0)) if key_layers else 0.0
    axis_h = 0.75  # x tick labels and the axis label above the grid, the x label below
    fig_h = head_h + axis_h + grid_h + 0.55 + key_h + 0.2
    fig = plt.figure(figsize=(fig_w, fig_h))

    def box(top: float, height: float, x0: float = 0.0, width: float | None = None) -> list[float]:
        """Figure-fraction rectangle from inches measured from the top-left."""
        width = fig_w - x0 if width is None else width
        return [x0 / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h]

    # ---- title and summary band --------------------------------------------------------------------
    y = 0.25
    for tl in title:
        fig.text(0.5, 1 - y / fig_h, tl, ha="center", va="top", fontsize=12, weight="bold")
        y += 0.3
    band = fig.add_axes(box(y, 0.2 * len(lines) + 0.15, 0.3, fig_w - 0.6))
    band.set_axis_off()
    band.add_patch(Rectangle((0, 0), 1, 1, transform=band.transAxes, facecolor="#f3f5f9",
                             edgecolor="#c5ccd8"))
    for k, line in enumerate(lines):
        band.text(0.01, 1 - (0.1 + 0.2 * k) / (0.2 * len(lines) + 0.15), line, transform=band.transAxes,
                  ha="left", va="top", fontsize=8.5, family="DejaVu Sans")

    # ---- the tile grid -----------------------------------------------------------------------------
    ax = fig.add_axes(box(head_h + axis_h - 0.2, grid_h, left, grid_w))
    bg = [Rectangle((t % ncols + GAP / 2, t // ncols + GAP / 2), 1 - GAP, 1 - GAP) for t in range(n_tiles)]
    ax.add_collection(PatchCollection(bg, facecolor="#eeeeee", edgecolor="#9a9a9a",
                                      linewidth=0.5 if detail else 0.2))
    span = 1 - GAP
    by_style: dict[int, list[Rectangle]] = {}
    labels: list[tuple[float, float, str, float, int]] = []  # x, y, text, font size, rotation
    for b in report.get("blocks", []):
        i = index.get(b["layer"])
        if i is None:
            continue
        t = b["tile"]
        col, row = t % ncols, t // ncols
        h = (b["row_end"] - b["row_start"]) / R * span
        w = (b["col_end"] - b["col_start"]) / C * span
        x0 = col + GAP / 2 + b["tile_col"] / C * span
        y0 = row + GAP / 2 + b["tile_row"] / R * span
        by_style.setdefault(i, []).append(Rectangle((x0, y0), w, h))
        if not detail:
            continue
        text = f"L{i}"
        if not report["packed"]:  # one block per tile: the tile's centre, over its block or free cells
            labels.append((col + 0.5, row + 0.5, text, 6.5, 0))
            continue
        need, w_in, h_in = 0.055 * len(text) + 0.03, w * cell, h * cell  # inches a label takes / has
        if w_in >= need and h_in >= 0.12:
            labels.append((x0 + w / 2, y0 + h / 2, text, 5.5, 0))
        elif h_in >= need and w_in >= 0.1:  # a narrow, tall block: the label turned upright
            labels.append((x0 + w / 2, y0 + h / 2, text, 5.5, 90))
    all_blocks = report.get("blocks", [])
    copy_rects: dict[int, list[Rectangle]] = {}
    outline: list[Rectangle] = []  # the bottleneck layer's cores, copies included
    for c in copies:
        b = all_blocks[c["block"]]
        i = index.get(b["layer"])
        if i is None:
            continue
        col, row = c["core"] % ncols, c["core"] // ncols
        h = (b["row_end"] - b["row_start"]) / R * span
        w = (b["col_end"] - b["col_start"]) / C * span
        copy_rects.setdefault(i, []).append(Rectangle((col + GAP / 2, row + GAP / 2), w, h))
        if detail:
            labels.append((col + 0.5, row + 0.5, f"L{i}'{c['copy']}", 5.5, 0))
    for c in placement.get("cores", []):
        if c["layer"] == bottleneck:
            outline.append(Rectangle((c["core"] % ncols + GAP / 4, c["core"] // ncols + GAP / 4),
                                     1 - GAP / 2, 1 - GAP / 2))
    for i, rects in by_style.items():
        color, hatch = layer_style(i)
        ax.add_collection(PatchCollection(rects, facecolor=[color], edgecolor="#333333",
                                          linewidth=0.3 if detail else 0.1, hatch=hatch or None))
    for i, rects in copy_rects.items():  # copies: the layer's colour under a dense white hatch
        color, _hatch = layer_style(i)
        ax.add_collection(PatchCollection(rects, facecolor=[color], edgecolor="white",
                                          linewidth=0.0, hatch="////"))
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor="#333333",
                                          linewidth=0.3 if detail else 0.1))
    for r in outline:  # patches, not a collection: the collections are the tiles and the blocks
        r.set(facecolor="none", edgecolor="#d62728", linewidth=1.6 if detail else 0.6)
        ax.add_patch(r)
    for x, yy, text, size, rotation in labels:  # black on a white box: readable on any colour and hatch
        ax.text(x, yy, text, ha="center", va="center", fontsize=size, rotation=rotation,
                color="black", weight="bold",
                bbox=dict(boxstyle="round,pad=0.12", fc=(1, 1, 1, 0.85), ec="none"))
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    ax.set_aspect("equal")
    for s in ax.spines.values():
        s.set_visible(False)
    step_x = 1 if ncols <= 16 else 4 if ncols <= 32 else 8
    ax.set_xticks([c + 0.5 for c in range(0, ncols, step_x)], [str(c) for c in range(0, ncols, step_x)])
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel(f"column: tile index = row's first index + column ({ncols} tiles per row)", fontsize=9)
    step_y = max(1, math.ceil(nrows / 40))
    ax.set_yticks([r + 0.5 for r in range(0, nrows, step_y)],
                  [str(r * ncols) for r in range(0, nrows, step_y)])
    ax.set_ylabel("first tile index of the row" if grid_h >= 2.2 else "first tile\nof the row", fontsize=9)
    ax.tick_params(labelsize=7, length=2)
    # chips: a line between them, their numbers on the right
    if per_chip % ncols == 0:
        rows_per_chip = per_chip // ncols
        n_chips = math.ceil(nrows / rows_per_chip)
        every = max(1, math.ceil(n_chips / max(1.0, grid_h / 0.35)))  # chip labels >= 0.35 in apart
        for c in range(every, n_chips, every):
            ax.axhline(c * rows_per_chip, color="#c0392b", linewidth=1.0, linestyle="--")
        for c in range(0, n_chips, every):
            top, bottom = c * rows_per_chip, min((c + every) * rows_per_chip, nrows)
            label = f"chip {c}" if every == 1 or c == n_chips - 1 else \
                f"chips {c}-{min(c + every, n_chips) - 1}"
            ax.text(ncols + 0.15, (top + bottom) / 2, label, ha="left", va="center",
                    fontsize=8 if detail else 6, color="#c0392b")
    else:
        for r in range(0, nrows, step_y):
            first, last = r * ncols // per_chip, min((r + 1) * ncols, n_tiles) - 1
            chips = f"chip {first}" if first == last // per_chip else f"chips {first}-{last // per_chip}"
            ax.text(ncols + 0.15, r + 0.5, chips, ha="left", va="center", fontsize=6, color="#c0392b")
    ax.text(0, nrows + 0.25, f"each square is one {R}x{C} tile; grey = unused cells"
            + ("; labels: layer index = pipeline stage, see the key" if detail else "")
            + ("; hatched: copies of a layer's weights (--duplicate)" if copies else ""), ha="left", va="top",
            fontsize=8,
            color="#555555")

    # ---- the layer key -----------------------------------------------------------------------------
    if key_layers:
        kax = fig.add_axes(box(head_h + axis_h + grid_h + 0.55, key_h, 0.3, fig_w - 0.6))
        kax.set_axis_off()
        handles = []
        n_copies = {st["layer"]: st["copies"] for st in placement.get("stages", [])}
        width = int(fig_w / key_cols * 13) - 5  # characters of a key entry at 7 pt
        for i, ly in enumerate(key_layers):
            color, hatch = layer_style(i)
            name = ly.get("alias") or ly["name"]
            tiles = f"{ly['tiles']} tile{'s' if ly['tiles'] != 1 else ''}"
            k = n_copies.get(ly["name"], 1)
            if k > 1:
                tiles += f" x{k} copies"
            if ly["name"] == bottleneck:
                tiles += " · bottleneck"
            label = f"L{i} {name}"
            if len(label) + len(tiles) + 3 > width:
                label = label[: max(8, width - len(tiles) - 4)] + "…"
            handles.append(Patch(facecolor=color, hatch=hatch, edgecolor="#333333", linewidth=0.4,
                                 label=f"{label} · {tiles}"))
        title_key = f"analog layers ({len(analog)}), in network order"
        if len(analog) > MAX_KEY:
            title_key += f"; the first {MAX_KEY} listed, all in the .md / .json report"
        kax.legend(handles=handles, loc="upper left", ncol=key_cols, fontsize=7, frameon=False,
                   title=title_key, title_fontsize=8.5, alignment="left", handlelength=1.6,
                   handleheight=1.1, columnspacing=1.2, borderaxespad=0.0)
    return fig
