"""Unit tests of tiling/packing and the conductance scale."""

from __future__ import annotations

import numpy as np

from compiler.conductance import g_scale
from compiler.tiling import check_no_overlap, place_packed, place_unpacked, split


def test_split_counts_and_cover():
    blocks = split(0, 600, 300, 256, 256)  # ceil(600/256)=3 x ceil(300/256)=2
    assert len(blocks) == 6
    assert sum(b.height * b.width for b in blocks) == 600 * 300
    assert blocks[-1].row_end == 600 and blocks[-1].col_end == 300
    assert place_unpacked(blocks) == 6 and [b.tile for b in blocks] == list(range(6))


def test_packing_random_no_overlap_and_bounds():
    rng = np.random.default_rng(1)
    blocks = []
    for i in range(40):
        blocks += split(i, int(rng.integers(1, 600)), int(rng.integers(1, 600)), 256, 256)
    n = place_packed(blocks, 256, 256)
    assert check_no_overlap(blocks, 256, 256)
    assert n <= len(blocks)
    assert n >= int(np.ceil(sum(b.height * b.width for b in blocks) / 65536))
    assert sorted({b.tile for b in blocks}) == list(range(n))


def test_packing_small_blocks_share_tile():
    blocks = split(0, 27, 16, 256, 256) + split(1, 144, 16, 256, 256) + split(2, 64, 10, 256, 256)
    assert place_packed(blocks, 256, 256) == 1 and check_no_overlap(blocks, 256, 256)


def test_g_scale_layer_and_column():
    W = np.array([[1.0, -4.0, 0.0], [2.0, 0.5, 0.0]], np.float32)
    assert np.allclose(g_scale(W, 25.0, "layer"), [6.25, 6.25, 6.25])
    assert np.allclose(g_scale(W, 25.0, "column"), [12.5, 6.25, 1.0])  # zero column -> 1.0
    assert np.allclose(g_scale(np.zeros((2, 2), np.float32), 25.0, "layer"), 1.0)


def test_write_atomically_all_or_nothing(tmp_path):
    import pytest

    from compiler.artifact import write_atomically
    from runtime.errors import AcompileError

    (tmp_path / "blocker.md").mkdir()  # os.replace onto a directory fails
    files = {tmp_path / "m.onnx": b"model", tmp_path / "blocker.md": b"report"}
    with pytest.raises(AcompileError, match="cannot write .*blocker.md"):
        write_atomically(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker.md"]  # no temp files, no model


def test_write_atomically_gives_the_usual_permissions(tmp_path):
    """Outputs are readable like any file the user writes (mkstemp alone would make them 0600)."""
    import os
    import stat

    from compiler.artifact import write_atomically

    old = os.umask(0o022)
    try:
        write_atomically({tmp_path / "m.onnx": b"model"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o644
