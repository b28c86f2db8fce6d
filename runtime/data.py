"""Datasets and preprocessing: where the images come from and how a model wants them.

Data is found in the folder the user gave (`NAME:PATH`, a `root` argument, else `$ACOMPILE_DATA`), or,
when the user gave none, in `../shared/data` beside the repo, then `models/data/` (tiny subsets bundled
for the demo); the `models` package says where those two are (`models.shared_data_dirs()`,
`models.DATA_DIR`). A folder the user gave is used or refused (an AcompileError naming it: missing, not a
folder, or without the dataset), never silently replaced by a fallback. Images stay uint8 until
`Preprocessing.apply`, so the model's own recipe (carried in its ONNX metadata) decides the float
conversion.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import models
from runtime import contract
from runtime.errors import AcompileError

PREPROCESSING_KEY = contract.META_PREPROCESSING

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

_IDX_DATASETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}
_BUNDLED = {("mnist", "test"): "mnist-test-1k.npz"}
_CIFAR10_EXACT_TEST = ("test-partial", "test-1k")  # `cifar10-exact:SUBSET` picks the test file


@dataclass
class Dataset:
    """Images as uint8 (N, H, W) or (N, H, W, C) and integer labels; `y` None: an inputs-only .npz (just
    `x`, for `acompile eval --metric agreement|rel-error`), whose `x` may also be float model inputs."""

    x: np.ndarray
    y: np.ndarray | None
    name: str

    def __len__(self) -> int:
        return len(self.x) if self.y is None else len(self.y)

    def subset(self, n: int | None) -> Dataset:
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.name)


@dataclass
class Preprocessing:
    """How raw uint8 images become the model's input tensor; stored as JSON in the ONNX metadata."""

    layout: str = "NCHW"  # "NCHW" or "flat" (N, H*W*C)
    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # C, H, W of the image
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "flat"):
            raise AcompileError(f"preprocessing: layout must be NCHW or flat, got {self.layout!r}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise AcompileError("preprocessing: mean and std need equal lengths and std > 0")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            msg = f"metadata {PREPROCESSING_KEY} is not valid preprocessing JSON: {exc}"
            raise AcompileError(msg) from exc

    def apply(self, x: np.ndarray) -> np.ndarray:
        """uint8 (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W) or (N, C*H*W), normalized per channel."""
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise AcompileError(f"images must be (N,H,W) or (N,H,W,C), got shape {x.shape}")
        c, h, w = self.input_shape
        if x.shape[1:] != (h, w, c):
            raise AcompileError(
                f"data images are {x.shape[1:3]} with {x.shape[3]} channel(s), but the model expects "
                f"{h}x{w} with {c} channel(s)"
            )
        out = x.astype(np.float32) * np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        out = (out - mean) / std
        out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        if self.layout == "flat":
            out = out.reshape(len(out), -1)
        return out


def default_preprocessing(dataset: str, layout: str = "NCHW") -> Preprocessing:
    """The usual normalization for a dataset; models exported by hwtrain carry their own."""
    base = dataset.split(":")[0]
    if base.startswith("cifar10"):
        return Preprocessing(layout, 1 / 255, list(CIFAR10_MEAN), list(CIFAR10_STD), [3, 32, 32], "cifar10")
    if base in ("mnist", "fashion-mnist"):
        return Preprocessing(layout, 1 / 255, list(MNIST_MEAN), list(MNIST_STD), [1, 28, 28], base)
    raise AcompileError(f"no default preprocessing for dataset {dataset!r}")


def data_roots(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for datasets, in order: a folder the user gave (`explicit`, else `$ACOMPILE_DATA`)
    alone, else the documented fallbacks (`../shared/data`; the bundled subsets come after these)."""
    given = _user_root(explicit)
    if given is not None:
        return [given[0]]
    return models.shared_data_dirs()


def _user_root(explicit: str | os.PathLike | None) -> tuple[Path, str] | None:
    """(folder, how the user gave it) for `--data NAME:PATH` / a `root` argument or `$ACOMPILE_DATA`;
    None when the user gave none. A path the user gave is used or refused, never skipped: a missing
    one (or a file where a folder is meant) is an AcompileError naming it."""
    if explicit:
        path, label = Path(explicit), f"data path {str(explicit)!r}"
    elif os.environ.get("ACOMPILE_DATA"):
        value = os.environ["ACOMPILE_DATA"]
        path, label = Path(value), f"$ACOMPILE_DATA {value!r}"
    else:
        return None
    if not path.exists():
        raise AcompileError(f"{label}: no such folder")
    if not path.is_dir():
        raise AcompileError(f"{label}: not a folder (a .npz file is given as --data FILE.npz)")
    return path, label


def _not_found(what: str, expected: str, root: str | os.PathLike | None) -> AcompileError:
    """The error for a dataset found nowhere: it names the folder the user gave, if any."""
    given = _user_root(root)
    if given is not None:
        return AcompileError(f"{what} not found in {given[1]}: expected {expected} there")
    return AcompileError(f"{what} not found: pass --data NAME:PATH, set $ACOMPILE_DATA, or place "
                         f"{expected} in ../shared/data")


def load_dataset(spec: str, split: str = "test", root: str | os.PathLike | None = None,
                 unlabelled: bool = False) -> Dataset:
    """Load `mnist`, `fashion-mnist`, `cifar10`, `cifar10-exact[:test-1k|test-partial]`, `NAME:PATH` or a
    `.npz` file (x, y). `unlabelled`: a `.npz` holding just `x` is accepted too (`y` None)."""
    if split not in ("train", "test"):
        raise AcompileError(f"split must be 'train' or 'test', got {split!r}")
    name, _, path = spec.partition(":")
    if not path and (spec.endswith(".npz") or os.sep in spec):
        return _load_npz(Path(spec), split, unlabelled)
    name = name.lower()
    if name not in (*_IDX_DATASETS, "cifar10", "cifar10-exact"):
        raise AcompileError(
            f"unknown dataset {spec!r}: use mnist, fashion-mnist, cifar10, cifar10-exact, NAME:PATH "
            "or a .npz file"
        )
    if name == "cifar10-exact" and path in _CIFAR10_EXACT_TEST:
        return _load_cifar10_exact(split, root, path)
    if path:
        root = path
    if root and str(root).endswith(".npz") and Path(root).is_file():  # NAME:FILE.npz, --data FILE.npz
        return _load_npz(Path(root), split, unlabelled)
    if name in _IDX_DATASETS:
        return _load_idx(name, split, root)
    if name == "cifar10":
        return _load_cifar10(split, root)
    return _load_cifar10_exact(split, root)


def _find(relative: str, root: str | os.PathLike | None) -> Path | None:
    for base in data_roots(root):
        for candidate in (base / relative, base / Path(relative).name):
            if candidate.exists():
                return candidate
    return None


def _load_npz(path: Path, split: str, unlabelled: bool = False) -> Dataset:
    if not path.exists():
        raise AcompileError(f"data file not found: {path}")
    if path.is_dir():
        raise AcompileError(f"{path}: a folder, not a .npz file; name the dataset it holds as NAME:PATH "
                            f"(e.g. mnist:{path})")
    try:
        with np.load(path, allow_pickle=False) as d:
            keys = set(d.files)
            xk, yk = ("x_train", "y_train") if split == "train" and "x_train" in keys else ("x", "y")
            if unlabelled and keys == {"x"}:  # inputs only: no labels (eval --metric agreement | rel-error)
                x = d["x"]
                if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
                    raise AcompileError(f"{path}: 'x' must be uint8 images or float model inputs, "
                                        f"got {x.dtype}")
                return Dataset(x, None, path.stem)
            if xk not in keys or yk not in keys:
                raise AcompileError(f"{path}: an image .npz needs arrays 'x' and 'y', found {sorted(keys)}")
            x, y = d[xk], d[yk]
    except (OSError, ValueError) as exc:
        raise AcompileError(f"{path}: not a readable .npz file ({exc})") from exc
    if x.dtype != np.uint8:
        raise AcompileError(f"{path}: 'x' must be uint8 images (N,H,W[,C]), got {x.dtype}")
    if len(x) != len(y):
        raise AcompileError(f"{path}: {len(x)} images but {len(y)} labels")
    return Dataset(x, y.astype(np.int64), path.stem)


def _read_idx(path: Path, magic_expected: int) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    magic = int(np.frombuffer(raw, ">u4", 1, 0)[0])
    if magic != magic_expected:
        raise AcompileError(f"{path}: not an IDX file of the expected kind (magic {magic})")
    if magic == 2051:
        n, rows, cols = np.frombuffer(raw, ">u4", 3, 4)
        return np.frombuffer(raw, np.uint8, offset=16).reshape(int(n), int(rows), int(cols))
    return np.frombuffer(raw, np.uint8, offset=8)


def _load_idx(name: str, split: str, root) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    folder = _IDX_DATASETS[name]
    img = _find(f"{folder}/{prefix}-images-idx3-ubyte.gz", root)
    lab = _find(f"{folder}/{prefix}-labels-idx1-ubyte.gz", root)
    if img is None or lab is None:
        bundled = _BUNDLED.get((name, split))
        # the bundled subset stands in only when the user named no folder (a given path is never skipped)
        if _user_root(root) is None and bundled and (models.DATA_DIR / bundled).exists():
            return _load_npz(models.DATA_DIR / bundled, "test")
        raise _not_found(f"{name} ({split})", f"{folder}/{prefix}-{{images-idx3,labels-idx1}}-ubyte.gz", root)
    return Dataset(_read_idx(img, 2051), _read_idx(lab, 2049).astype(np.int64), name)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "acompile"


def _load_cifar10(split: str, root) -> Dataset:
    batches = _find("cifar-10-batches-py", root)
    if batches is not None and batches.is_dir():
        return _load_cifar10_batches(batches, split)
    src = _find(f"cifar10-jpeg/{split}.npz", root)
    if src is None:
        raise _not_found(f"cifar10 ({split})", f"cifar10-jpeg/{split}.npz or cifar-10-batches-py/", root)
    cache = _cache_dir() / f"cifar10-jpeg-{split}-{src.stat().st_size}.npz"
    if cache.exists():
        with np.load(cache) as d:
            return Dataset(d["x"], d["y"].astype(np.int64), "cifar10")
    x, y = _decode_jpeg_npz(src)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, cache)
    return Dataset(x, y.astype(np.int64), "cifar10")


def _decode_jpeg_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from runtime.progress import Progress

    with np.load(path) as d:
        jpeg, offsets, y = d["jpeg"], d["offsets"], d["y"]
    x = np.empty((len(y), 32, 32, 3), np.uint8)
    for i in Progress(range(len(y)), desc=f"decoding {path.name}", unit="images"):
        blob = jpeg[offsets[i] : offsets[i + 1]].tobytes()
        x[i] = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    return x, y


def _load_cifar10_exact(split: str, root, subset: str = "test-partial") -> Dataset:
    """The exact CIFAR-10 subsets: test `test-partial` (default; not class-balanced) or `test-1k` (the
    first 1000 test images), train `train-5k`."""
    name = f"{subset}.npz" if split == "test" else "train-5k.npz"
    path = _find(f"cifar10/{name}", root)
    if path is None:
        raise _not_found(f"cifar10-exact ({split})", f"cifar10/{name}", root)
    ds = _load_npz(path, "test")
    tag = "" if split == "train" or subset == "test-partial" else f":{subset}"
    return Dataset(ds.x, ds.y, f"cifar10-exact{tag}")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """The official CIFAR batches are pickles: allow only the numpy globals that plain arrays need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _load_cifar10_batches(folder: Path, split: str) -> Dataset:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        with open(folder / n, "rb") as fh:
            batch = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
        xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"], np.int64))
    return Dataset(np.concatenate(xs), np.concatenate(ys), "cifar10")


def augment_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Standard CIFAR augmentation on uint8 NHWC: random crop of the zero-padded image, random h-flip
    (training in hwtrain, and the BN calibration images of `bn` compensation)."""
    n, h, w = x.shape[:3]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 3))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip][:, :, ::-1]
    return out


def crop_flip_applies(x: np.ndarray) -> bool:
    """The images augment_crop_flip is meant for: 32x32 RGB uint8 (CIFAR-style)."""
    return x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3)
