"""Bundled models and data: the zoo (`models.zoo`), reference architectures for tests and benchmarks
(`models.archs`), the pretrained ONNX files beside this file and tiny dataset subsets in `data/`.

Importing the package is cheap (no torch); the locations below are the only place that knows where
bundled files and the documented `../shared/data` fallback live.
"""

from __future__ import annotations

from pathlib import Path

#: This package's folder: the bundled ONNX models and their model cards.
MODELS_DIR = Path(__file__).resolve().parent
#: Tiny dataset subsets bundled for the demo and the tests (`mnist-test-1k.npz`, ...).
DATA_DIR = MODELS_DIR / "data"


def model_path(name: str) -> Path:
    """A bundled model file, e.g. `model_path("mlp-mnist.onnx")`."""
    return MODELS_DIR / name


def shared_data_dirs() -> list[Path]:
    """The documented fallback for full datasets: `shared/data` in the folder that holds the checkout
    (`../shared/data` seen from the repository root), and the same seen from the working directory."""
    checkout = MODELS_DIR.parent
    candidates = [checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return list(dict.fromkeys(candidates))
