"""Tiling: split each weight matrix into R x C blocks and place blocks on physical tiles.

Without packing every block gets its own tile. With packing (``--pack``) blocks are placed by shelf
first-fit-decreasing 2-D bin packing: blocks sorted by height, each placed on the first shelf of the
first tile where it fits, a new shelf opened when the tile still has free rows, a new tile otherwise.
Blocks never overlap: within a shelf they sit side by side, shelves stack vertically. A block of a
replicated layer (target [mapping] replicate) takes its height times its replicas in rows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Block:
    layer: int  # index into the list of analog layers
    row_start: int
    row_end: int
    col_start: int
    col_end: int
    tile: int = -1
    tile_row: int = 0
    tile_col: int = 0
    replicas: int = 1  # copies of the block stacked in its tile's rows (replicas_for)

    @property
    def height(self) -> int:
        return self.row_end - self.row_start

    @property
    def footprint(self) -> int:
        """Rows the block takes on its tile: its copies stacked."""
        return self.height * self.replicas

    @property
    def width(self) -> int:
        return self.col_end - self.col_start


def split(layer: int, rows: int, cols: int, tile_rows: int, tile_cols: int, replicas: int = 1
          ) -> list[Block]:
    """ceil(rows/R) x ceil(cols/C) blocks, row-block major."""
    return [Block(layer, r, min(r + tile_rows, rows), c, min(c + tile_cols, cols), replicas=replicas)
            for r in range(0, rows, tile_rows) for c in range(0, cols, tile_cols)]


REPLICATE = ("none", "free-rows")


def replicas_for(rows: int, tile_rows: int, policy: str) -> int:
    """Copies of a layer's matrix its tile holds under the target's `replicate` policy. "free-rows": as
    many as fit in the rows of its one tile that it leaves free (a layer of 27 rows on 256-row tiles: 9),
    so the copies cost no tile; their column currents add, averaging the devices' errors (DESIGN §5).
    A matrix taller than half a tile gets 1."""
    if policy == "none" or rows > tile_rows:
        return 1
    if policy == "free-rows":
        return max(1, tile_rows // max(rows, 1))
    raise ValueError(f"unknown replicate policy {policy!r} (use {', '.join(REPLICATE)})")


def place_unpacked(blocks: list[Block]) -> int:
    """One tile per block, numbered in order. Returns the number of tiles."""
    for i, b in enumerate(blocks):
        b.tile, b.tile_row, b.tile_col = i, 0, 0
    return len(blocks)


class _Tile:
    __slots__ = ("shelves", "used_rows")

    def __init__(self) -> None:
        self.shelves: list[list[int]] = []  # [y, height, x_used]
        self.used_rows = 0


def place_packed(blocks: list[Block], tile_rows: int, tile_cols: int) -> int:
    """Shelf first-fit-decreasing packing. Returns the number of tiles; sets tile/tile_row/tile_col."""
    order = sorted(range(len(blocks)), key=lambda i: (-blocks[i].footprint, -blocks[i].width, i))
    tiles: list[_Tile] = []
    open_tiles: list[int] = []  # tiles that may still have room
    for i in order:
        b = blocks[i]
        h, w = b.footprint, b.width
        if h == tile_rows and w == tile_cols:  # a full block fills a tile: no search needed
            tiles.append(_Tile())
            tiles[-1].used_rows = tile_rows
            b.tile, b.tile_row, b.tile_col = len(tiles) - 1, 0, 0
            continue
        placed = False
        for t in open_tiles:
            tile = tiles[t]
            for shelf in tile.shelves:
                if h <= shelf[1] and shelf[2] + w <= tile_cols:
                    b.tile, b.tile_row, b.tile_col = t, shelf[0], shelf[2]
                    shelf[2] += w
                    placed = True
                    break
            if not placed and tile.used_rows + h <= tile_rows:
                tile.shelves.append([tile.used_rows, h, w])
                b.tile, b.tile_row, b.tile_col = t, tile.used_rows, 0
                tile.used_rows += h
                placed = True
            if placed:
                break
        if not placed:
            tile = _Tile()
            tile.shelves.append([0, h, w])
            tile.used_rows = h
            tiles.append(tile)
            b.tile, b.tile_row, b.tile_col = len(tiles) - 1, 0, 0
            open_tiles.append(len(tiles) - 1)
        # drop tiles that are full enough that the smallest possible block (1x1) cannot fit
        open_tiles = [t for t in open_tiles
                      if tiles[t].used_rows < tile_rows
                      or any(s[2] < tile_cols for s in tiles[t].shelves)]
    # renumber tiles by first appearance in layer/block order, so tile numbers follow the network
    remap: dict[int, int] = {}
    for b in blocks:
        if b.tile not in remap:
            remap[b.tile] = len(remap)
        b.tile = remap[b.tile]
    return len(tiles)


def check_no_overlap(blocks: list[Block], tile_rows: int, tile_cols: int) -> bool:
    """True when no two blocks share a cell of a tile and all lie inside it (used by tests)."""
    by_tile: dict[int, list[Block]] = {}
    for b in blocks:
        if b.tile_row < 0 or b.tile_col < 0 or b.tile_row + b.footprint > tile_rows \
                or b.tile_col + b.width > tile_cols:
            return False
        by_tile.setdefault(b.tile, []).append(b)
    for bs in by_tile.values():
        for i, a in enumerate(bs):
            for c in bs[i + 1:]:
                if (a.tile_row < c.tile_row + c.footprint and c.tile_row < a.tile_row + a.footprint
                        and a.tile_col < c.tile_col + c.width and c.tile_col < a.tile_col + a.width):
                    return False
    return True
