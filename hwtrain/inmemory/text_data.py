"""Tiny Shakespeare for the character-level LSTM: `tinyshakespeare/input.txt` in the data folder
(runtime.data.data_roots: $ACOMPILE_DATA, else ../shared/data). Its README's split: the first 90 % of the
characters train, the last 10 % validate. The vocabulary is the sorted set of the file's characters (65)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.errors import AcompileError


@dataclass
class CharCorpus:
    train: torch.Tensor  # int64 character ids
    val: torch.Tensor
    vocab: list[str]


def load_tinyshakespeare(root: str | None = None) -> CharCorpus:
    from runtime.data import data_roots

    for base in data_roots(root):
        for path in (base / "tinyshakespeare" / "input.txt", base / "input.txt"):
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                vocab = sorted(set(text))
                index = {ch: i for i, ch in enumerate(vocab)}
                ids = torch.tensor([index[ch] for ch in text], dtype=torch.int64)
                cut = int(0.9 * len(ids))
                return CharCorpus(ids[:cut], ids[cut:], vocab)
    raise AcompileError("tinyshakespeare not found: place tinyshakespeare/input.txt in ../shared/data "
                        "or set $ACOMPILE_DATA")
