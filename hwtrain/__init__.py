"""hwtrain: training networks that survive analog PCM hardware, and exporting them to ONNX.

    from hwtrain import HWAConfig, apply_hwa, clip_weights_, export_onnx

Names load lazily so that `acompile --help` / `hwtrain.cli` do not import torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "HWAConfig": "hwtrain.noise",
    "apply_hwa": "hwtrain.noise",
    "strip_hwa": "hwtrain.noise",
    "clip_weights_": "hwtrain.noise",
    "clean_weight": "hwtrain.noise",
    "TrainConfig": "hwtrain.train",
    "train": "hwtrain.train",
    "evaluate": "hwtrain.train",
    "export_onnx": "hwtrain.export",
    "run_training": "hwtrain.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwtrain' has no attribute {name!r}")
