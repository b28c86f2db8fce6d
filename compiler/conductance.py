"""Weight -> differential conductance pair scale (CONTRACTS §3 "Conductances").

G+ = G_SCALE * max(W, 0), G- = G_SCALE * max(-W, 0) (uS); per layer G_SCALE = g_max / max|W|, per
column g_max / max|W[:, j]| (an all-zero column/layer gets 1.0). So |G±| <= g_max and the largest
weight sits at g_max (Joshi et al. 2020: G = |W| G_max / max|W| per layer).
"""

from __future__ import annotations

import numpy as np


def g_scale(W: np.ndarray, g_max: float, mode: str) -> np.ndarray:
    """float32 [cols] scale in uS per weight unit."""
    absw = np.abs(W)
    if mode == "layer":
        m = float(absw.max()) if absw.size else 0.0
        return np.full(W.shape[1], g_max / m if m > 0 else 1.0, dtype=np.float32)
    if mode == "column":
        m = absw.max(axis=0) if absw.size else np.zeros(W.shape[1], np.float32)
        with np.errstate(divide="ignore"):
            s = np.where(m > 0, g_max / np.where(m > 0, m, 1.0), 1.0)
        return s.astype(np.float32)
    raise ValueError(f"weight scale mode {mode!r}")


def conductance_pair(W: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target conductances (G+, G-) in uS; the unused device of a pair is 0 here (g_min offset aside)."""
    return scale * np.maximum(W, 0), scale * np.maximum(-W, 0)
