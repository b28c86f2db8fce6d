"""The training loop behind `acompile train`: plain or hardware-aware (HWA) SGD on a zoo model.

Recipe (He et al. 2016 / Joshi et al. 2020 style): SGD with momentum 0.9 (Nesterov), weight decay,
cosine learning-rate decay per step (optionally a short linear warm-up), cross-entropy loss (MSE against
the input for models with `task = "reconstruct"`, the zoo's autoencoder), standard
CIFAR augmentation (random crop of the 4-pixel zero-padded image + horizontal flip) for CIFAR datasets,
none for MNIST-like data. HWA adds forward-only weight noise and post-step clipping (hwtrain.noise).

Checkpoints are `.npz` files of plain arrays (model, optimizer momentum, RNG state) plus one JSON string
array for scalars and history — no pickle anywhere, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwtrain.noise import (
    PARAMETRIZED_NAME,
    HWAConfig,
    apply_hwa,
    clean_state_dict,
    clip_weights_,
    load_clean_state_dict,
)
from runtime.data import Dataset, Preprocessing, augment_crop_flip
from runtime.errors import AcompileError
from runtime.outputs import write_files
from runtime.progress import Progress
from runtime.progress import write as progress_write

SCHEDULES = ("cosine", "step", "constant")
CHECKPOINT_FORMAT = "acompile.checkpoint/1"

# Per-model defaults: what `acompile train MODEL` uses when an option is not given.
DEFAULTS: dict[str, dict] = {
    "mlp": {"epochs": 10, "lr": 0.05, "batch_size": 64, "weight_decay": 1e-4, "warmup_epochs": 0.0},
    "lenet5": {"epochs": 10, "lr": 0.05, "batch_size": 64, "weight_decay": 5e-4, "warmup_epochs": 0.0},
    "resnet20": {"epochs": 200, "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4, "warmup_epochs": 1.0},
    "resnet32": {"epochs": 200, "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4, "warmup_epochs": 1.0},
    "lstm": {"epochs": 20, "lr": 0.2, "batch_size": 64, "weight_decay": 1e-4, "warmup_epochs": 0.0},
    "transformer": {"epochs": 20, "lr": 0.05, "batch_size": 64, "weight_decay": 1e-4, "warmup_epochs": 1.0},
    "autoencoder": {"epochs": 20, "lr": 0.2, "batch_size": 64, "weight_decay": 0.0, "warmup_epochs": 0.0},
}


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored as the ONNX recipe)."""

    model: str
    dataset: str
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    augment: bool | None = None  # None: on for CIFAR datasets
    seed: int = 0
    limit: int | None = None
    hwa: HWAConfig = field(default_factory=HWAConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise AcompileError(f"--epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise AcompileError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise AcompileError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise AcompileError(f"lr schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.limit is not None and self.limit < 1:
            raise AcompileError(f"--limit must be >= 1, got {self.limit}")
        if self.augment is None:
            self.augment = self.dataset.lower().startswith("cifar")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hwa"] = self.hwa.to_dict()
        return d


# ---------------------------------------------------------------------------------------------------
# data


def batches(
    ds: Dataset,
    pre: Preprocessing,
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    augment: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input, label) tensors; shuffled when rng is given; uint8 -> float happens per batch."""
    order = rng.permutation(len(ds)) if rng is not None else np.arange(len(ds))
    for start in range(0, len(ds), batch_size):
        idx = order[start : start + batch_size]
        x = ds.x[idx]
        if augment and rng is not None:
            x = augment_crop_flip(x, rng)
        yield torch.from_numpy(pre.apply(x)), torch.from_numpy(np.asarray(ds.y[idx], np.int64))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (no HWA noise) for a digital evaluation, its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ds: Dataset,
    pre: Preprocessing,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Digital (fp32, noise-free) accuracy and mean loss of the model on a dataset."""
    correct, loss_sum = 0, 0.0
    with eval_mode(model):
        for x, y in batches(ds, pre, batch_size):
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    return {"accuracy": correct / max(len(ds), 1), "loss": loss_sum / max(len(ds), 1)}


def is_reconstruction(model: nn.Module) -> bool:
    """Models with `task = "reconstruct"` (the zoo's autoencoder) train with MSE against their input."""
    return getattr(model, "task", "classify") == "reconstruct"


def to_pixels(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Undo the mean/std normalization: model-space NCHW tensors -> pixels / 255 (in [0, 1])."""
    shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    mean = torch.tensor(pre.mean, dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.tensor(pre.std, dtype=x.dtype, device=x.device).reshape(shape)
    if pre.layout == "flat" and x.dim() == 2 and len(pre.mean) > 1:
        raise AcompileError("to_pixels: flat multi-channel layout is not supported")
    return x * std + mean


@torch.no_grad()
def evaluate_reconstruction(
    model: nn.Module,
    ds: Dataset,
    pre: Preprocessing,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Digital reconstruction quality: mean MSE in the model's (normalized) space, like the training
    loss, and the relative L2 error ||x_hat - x|| / ||x|| over the whole set in pixel space [0, 1]."""
    loss_sum, err2, ref2 = 0.0, 0.0, 0.0
    with eval_mode(model):
        for x, _ in batches(ds, pre, batch_size):
            x = x.to(device)
            out = model(x)
            loss_sum += float(F.mse_loss(out, x, reduction="sum")) / (x.numel() / len(x))
            px, pout = to_pixels(x, pre), to_pixels(out, pre)
            err2 += float(((pout - px) ** 2).sum())
            ref2 += float((px**2).sum())
    return {"loss": loss_sum / max(len(ds), 1), "rel_l2": math.sqrt(err2 / max(ref2, 1e-30))}


# ---------------------------------------------------------------------------------------------------
# schedule and optimizer


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at a global step: linear warm-up, then cosine (to 0) or x0.1 at 50 % and 75 %."""
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        frac = step / total
        return cfg.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    progress = (step - warm) / max(total - warm, 1)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD + momentum; no weight decay on BN parameters and biases (they are not on the crossbar)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )


# ---------------------------------------------------------------------------------------------------
# checkpoints (npz, no pickle)


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): PARAMETRIZED_NAME.sub(r"\1", n) for n, p in model.named_parameters()}


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer, state: dict
) -> Path:
    """Write model weights, optimizer momentum, RNG state and `state` (JSON-able) to one .npz file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in clean_state_dict(model).items()}
    names = _param_names(model)
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                arrays[f"momentum/{names[id(p)]}"] = buf.detach().cpu().numpy()
    arrays["rng/torch"] = torch.get_rng_state().numpy()
    arrays["meta"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, **state}))
    write_files({path: lambda f: np.savez(f, **arrays)})  # all or nothing, even when interrupted
    return path


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, opt: torch.optim.Optimizer | None = None
) -> dict:
    """Restore what save_checkpoint wrote (into a model built the same way); returns the JSON state."""
    path = Path(path)
    if not path.exists():
        raise AcompileError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise AcompileError(f"{path}: not an acompile checkpoint")
            model_state = {k[6:]: torch.from_numpy(d[k].copy()) for k in d.files if k.startswith("model/")}
            momentum = {k[9:]: torch.from_numpy(d[k].copy()) for k in d.files if k.startswith("momentum/")}
            rng = torch.from_numpy(d["rng/torch"].copy())
    except (OSError, ValueError, KeyError) as exc:
        raise AcompileError(f"{path}: unreadable checkpoint ({exc})") from exc
    load_clean_state_dict(model, model_state)
    if opt is not None:
        names = _param_names(model)
        for group in opt.param_groups:
            for p in group["params"]:
                buf = momentum.get(names[id(p)])
                if buf is not None:
                    opt.state[p]["momentum_buffer"] = buf.to(p.device)
    torch.set_rng_state(rng)
    return meta


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Initialize from a trained model: an hwtrain ONNX export (initializers named like the state dict)
    or a checkpoint .npz. Joshi et al. start HWA from a trained fp32 model; this is how."""
    path = Path(path)
    if not path.exists():
        raise AcompileError(f"--init: file not found: {path}")
    own = clean_state_dict(model)
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
            raise AcompileError(f"--init {path}: not an ONNX model ({type(exc).__name__})") from None
        inits = {t.name: t for t in proto.graph.initializer}
        state = {k: torch.from_numpy(numpy_helper.to_array(inits[k]).copy()) for k in own if k in inits}
    else:
        try:
            with np.load(path, allow_pickle=False) as d:
                state = {k[6:]: torch.from_numpy(d[k].copy()) for k in d.files if k.startswith("model/")}
        except (OSError, ValueError) as exc:
            raise AcompileError(f"--init {path}: unreadable ({exc})") from exc
    missing = [k for k, v in own.items() if v.is_floating_point() and k not in state]
    if missing:
        raise AcompileError(f"--init {path}: no weights for {', '.join(missing[:3])} (a different model?)")
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise AcompileError(
                f"--init {path}: {k} has shape {list(v.shape)}, model needs {list(own[k].shape)}"
            )
    state.update({k: v for k, v in own.items() if k not in state})
    load_clean_state_dict(model, {k: state[k] for k in own})


# ---------------------------------------------------------------------------------------------------
# the loop


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_ds: Dataset,
    test_ds: Dataset | None,
    pre: Preprocessing,
    *,
    compute: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Train `model` in place (HWA applied per cfg.hwa, stripped again at the end); return metrics.

    Metrics: per-epoch history (train loss/accuracy, test accuracy, lr, seconds) and the final
    digital test accuracy.
    """
    device = _device(compute)
    torch.manual_seed(cfg.seed)
    if cfg.limit:
        train_ds = train_ds.subset(cfg.limit)
    model.to(device)
    apply_hwa(model, cfg.hwa)
    opt = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        meta = load_checkpoint(resume, model, opt)
        start_epoch, history = int(meta["epoch"]), list(meta.get("history", []))
        if start_epoch >= cfg.epochs:
            raise AcompileError(f"checkpoint {resume} already finished {start_epoch} of {cfg.epochs} epochs")
    reconstruct = is_reconstruction(model)
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        rng = np.random.default_rng([cfg.seed, epoch])
        loss_sum, correct, seen = 0.0, 0, 0
        bar = Progress(
            batches(train_ds, pre, cfg.batch_size, rng=rng, augment=bool(cfg.augment)),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batches",
            enabled=progress,
        )
        for i, (x, y) in enumerate(bar):
            lr = lr_at(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.mse_loss(out, x) if reconstruct else F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clip_weights_(model, cfg.hwa.clip)
            loss_sum += float(loss.detach()) * len(y)
            if not reconstruct:
                correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.3g}")
        bar.close()
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "lr": lr,
            "seconds": round(time.time() - t0, 2),
        }
        if reconstruct:
            del record["train_accuracy"]
        if test_ds is not None and reconstruct:
            ev = evaluate_reconstruction(model, test_ds, pre, device=device)
            record.update(test_loss=ev["loss"], test_rel_l2=ev["rel_l2"])
        elif test_ds is not None:
            ev = evaluate(model, test_ds, pre, device=device)
            record.update(test_accuracy=ev["accuracy"], test_loss=ev["loss"])
        history.append(record)
        if progress:
            progress_write(_epoch_line(record))
        if checkpoint:  # "{epoch}" in the path keeps one file per epoch
            save_checkpoint(
                str(checkpoint).replace("{epoch}", str(epoch + 1)),
                model,
                opt,
                {"epoch": epoch + 1, "history": history, "config": cfg.to_dict()},
            )
    from hwtrain.noise import strip_hwa

    strip_hwa(model)
    model.eval()
    final = history[-1] if history else {}
    return {
        "config": cfg.to_dict(),
        "history": history,
        "train_samples": len(train_ds),
        "test_samples": len(test_ds) if test_ds is not None else 0,
        "test_accuracy": final.get("test_accuracy"),
        "train_loss": final.get("train_loss"),
        **({"task": "reconstruct", "test_rel_l2": final.get("test_rel_l2")} if reconstruct else {}),
    }


def _epoch_line(r: dict) -> str:
    if "train_accuracy" not in r:  # reconstruction
        test = f"  test mse {r['test_loss']:.4f}  rel L2 {r['test_rel_l2']:.4f}" if "test_rel_l2" in r else ""
        return f"epoch {r['epoch']}: mse {r['train_loss']:.4f}{test}  lr {r['lr']:.3g}  {r['seconds']:.1f}s"
    test = f"  test acc {r['test_accuracy']:.4f}" if "test_accuracy" in r else ""
    return (
        f"epoch {r['epoch']}: loss {r['train_loss']:.4f}  train acc {r['train_accuracy']:.4f}{test}"
        f"  lr {r['lr']:.3g}  {r['seconds']:.1f}s"
    )


def _device(compute: str) -> torch.device:
    if compute not in ("cpu", "cuda"):
        raise AcompileError(f"--compute must be cpu or cuda, got {compute!r}")
    if compute == "cuda" and not torch.cuda.is_available():
        raise AcompileError("--compute cuda: no CUDA device is available (this torch build or machine)")
    return torch.device(compute)
