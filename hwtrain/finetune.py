"""`acompile finetune`: hardware-aware fine-tuning of a user's own ONNX model against a target.

The user's graph is trained as it is (hwtrain.graph_module): the crossbar layers the compiler maps for
`--target` see that target's programming noise and periphery (hwtrain.analog_hwa) in the forward pass,
weights are clipped to k std(W) after each step (Joshi et al. 2020), BN statistics adapt, and the same
graph comes back with new weights, the recipe, the target and the parent's SHA-256 in its metadata.

Everything a run can get wrong is checked before the first step: options, output paths, the model's
ops, preprocessing and data shape. Checkpoints (npz + JSON, no pickle) are written after every epoch;
`--resume` continues from one.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from hwtrain.analog_hwa import HWAContext, HWAKnobs, HWALayer
from hwtrain.graph_module import OnnxGraphModule, initializer_source, trainable_initializers
from hwtrain.train import lr_at
from runtime import contract
from runtime.analog_settings import AnalogSettings
from runtime.data import PREPROCESSING_KEY, Dataset, Preprocessing, augment_crop_flip
from runtime.errors import AcompileError
from runtime.outputs import write_files
from runtime.progress import Progress
from runtime.progress import write as progress_write

CHECKPOINT_FORMAT = "acompile.finetune-checkpoint/1"
RECIPE_KEY = contract.META_RECIPE
PARENT_KEY = contract.META_PARENT_SHA256
TARGET_KEY = contract.META_FINETUNE_TARGET
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class FinetuneConfig:
    """One fine-tuning run (stored as the output's recipe)."""

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    augment: bool | None = None  # None: on for 32x32 RGB images (CIFAR-style)
    seed: int = 0
    limit: int | None = None
    eval_limit: int | None = None
    precision: str = "fp32"
    channels_last: bool = True
    distill: float = 0.0  # weight of the parent's soft labels in the loss (0 = plain cross-entropy)
    distill_temp: float = 4.0
    bn_restat: int = 0  # clean training images the BN statistics are re-estimated on after training
    knobs: HWAKnobs = field(default_factory=HWAKnobs)

    def __post_init__(self) -> None:
        checks = [(self.bn_restat >= 0, f"--bn-restat must be >= 0, got {self.bn_restat}"),
                  (self.epochs >= 1 or (self.epochs == 0 and self.bn_restat > 0),
                   f"--epochs must be >= 1 (0 only with --bn-restat), got {self.epochs}"),
                  (math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}"),
                  (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
                  (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
                  (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                   f"--weight-decay must be >= 0, got {self.weight_decay}"),
                  (self.schedule in ("cosine", "step", "constant"),
                   f"--schedule must be cosine, step or constant, got {self.schedule!r}"),
                  (self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}"),
                  (self.eval_limit is None or self.eval_limit >= 1,
                   f"--eval-limit must be >= 1, got {self.eval_limit}"),
                  (0 <= self.distill <= 1, f"--distill must be in [0, 1], got {self.distill}"),
                  (math.isfinite(self.distill_temp) and self.distill_temp > 0,
                   f"--distill-temp must be > 0, got {self.distill_temp}"),
                  (self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}"),
                  (0 <= self.seed < 2**63, f"--seed must be in [0, 2^63), got {self.seed}")]
        for ok, msg in checks:
            if not ok:
                raise AcompileError(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["knobs"] = self.knobs.to_dict()
        return d


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_precision(requested: str) -> str:
    """'auto' -> bf16 on CPUs with AMX tiles, else fp32: with AVX-512-BF16 alone, bf16 convolutions ran
    slower than fp32 for ResNet-32 fine-tuning (bench/RESULTS-finetune.md)."""
    if requested != "auto":
        return requested
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if " amx_bf16" in flags else "fp32"


# ---------------------------------------------------------------------------------------------------
# building the trainable model


@dataclass
class Prepared:
    """The user's model, its mapping for the target, and the trainable graph."""

    original: onnx.ModelProto
    parent_sha256: str
    target: dict[str, Any]
    module: OnnxGraphModule
    layers: list[HWALayer]
    ctx: HWAContext
    preprocessing: Preprocessing
    input_dims: list
    analog_weights: list[str]  # initializers holding the crossbar layers' weights (what clipping acts on)


def model_preprocessing(model: onnx.ModelProto, mean: list[float] | None, std: list[float] | None,
                        scale: float | None) -> tuple[Preprocessing, list]:
    """The model's own preprocessing (metadata) with CLI overrides; without metadata --mean and --std
    are required: guessing a normalization would train the network on the wrong inputs."""
    meta = {p.key: p.value for p in model.metadata_props}
    g = model.graph
    inits = {t.name for t in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if PREPROCESSING_KEY in meta:
        prep = Preprocessing.from_json(meta[PREPROCESSING_KEY])
    else:
        if mean is None or std is None:
            raise AcompileError(f"the model has no {PREPROCESSING_KEY} metadata: pass --mean and --std "
                                "(per channel, for pixels scaled by --scale, default 1/255) as it was "
                                "trained with")
        if len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
            shape = list(dims[1:])
        elif len(dims) == 2:
            shape = None
        else:
            raise AcompileError(f"input {inp.name!r} has shape {dims}: finetune needs images "
                                "[N, C, H, W] with static C, H, W, or flat [N, features]")
        prep = Preprocessing(layout="flat" if len(dims) == 2 else "NCHW", mean=list(mean), std=list(std))
        if shape is not None:
            prep.input_shape = shape
    if mean is not None:
        prep.mean = list(mean)
    if std is not None:
        prep.std = list(std)
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise AcompileError(f"--scale must be > 0, got {scale}")
        prep.scale = scale
    if len(prep.mean) != len(prep.std) or any(not (math.isfinite(s) and s > 0) for s in prep.std):
        raise AcompileError("--mean and --std need the same number of values, and std > 0")
    return prep, dims


def prepare(model_path: Path, target: dict[str, Any], *, digital: list[str] | None = None,
            knobs: HWAKnobs | None = None, settings_overrides: dict[str, Any] | None = None,
            mean: list[float] | None = None, std: list[float] | None = None,
            scale: float | None = None) -> Prepared:
    """Read and validate the model, map it for the target (in memory), build the trainable graph."""
    from compiler import frontend
    from compiler.pipeline import map_model

    original = frontend.read_model(model_path)
    # biases train as digital parameters: the mapping for fine-tuning keeps them off the crossbar (the
    # fine-tuned model still maps them as rows when compiled for a target with bias = "row")
    mapped, _report = map_model(model_path, {**target, "mapping": {**target["mapping"], "bias": "digital"}},
                                digital)
    # ConvTranspose and LSTM / GRU / RNN stay digital in fine-tuning: HWALayer builds its geometry from
    # the original weight in Conv / matrix layout, while a ConvTranspose weight is laid out (and flipped)
    # differently on the tiles and a recurrent layer's array is [W^T; R^T] read once per step; they train
    # as plain digital layers (and still map analog when the fine-tuned model is compiled)
    digital_ops = (contract.ANALOG_CONV_TRANSPOSE, *contract.RECURRENT_OPS)
    analog_nodes = {n.output[0]: n for n in mapped.graph.node
                    if n.domain == contract.DOMAIN and n.op_type not in digital_ops}
    if not analog_nodes:
        raise AcompileError(f"{str(model_path)!r}: no layer maps onto the {target.get('name')!r} crossbars "
                            "(no Conv / Gemm / MatMul with a constant weight; ConvTranspose and recurrent "
                            "layers fine-tune digitally), nothing to fine-tune")
    shapes = {t.name: tuple(t.dims) for t in mapped.graph.initializer}
    settings = AnalogSettings.from_target(target, **(settings_overrides or {}))
    knobs = knobs or HWAKnobs()
    ctx = HWAContext()
    layers: list[HWALayer] = []
    analog_weights: list[str] = []
    scale_mode = target["mapping"]["weight_scale"]
    roles = trainable_initializers(original)

    def hook(node: onnx.NodeProto, info: Any) -> HWALayer:
        mnode = analog_nodes[node.output[0]]
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            raise AcompileError(f"node '{info.name}' ({node.op_type}): mapped analog but finetune cannot "
                                "train this op on crossbars")
        if initializer_source(original, node.input[1]) not in roles:
            raise AcompileError(f"node '{info.name}' ({node.op_type}): its weight {node.input[1]!r} is "
                                "not an initializer (computed in the graph), so it cannot be fine-tuned")
        analog_weights.append(initializer_source(original, node.input[1]))
        layer = HWALayer.from_mapping(node, mnode, shapes[mnode.input[contract.IN_W]], settings, knobs,
                                      scale_mode, ctx)
        layers.append(layer)
        return layer

    module = OnnxGraphModule(original, analog=set(analog_nodes), analog_hook=hook)
    if len(layers) != len(analog_nodes):
        raise AcompileError("some analog layers were not found in the original graph (its graph changed "
                            "under normalization); cannot fine-tune it")
    prep, dims = model_preprocessing(original, mean, std, scale)
    return Prepared(original, file_sha256(model_path), target, module, layers, ctx, prep, dims,
                    list(dict.fromkeys(analog_weights)))


def check_data(prep: Preprocessing, dims: list, ds: Dataset, label: str) -> None:
    """Raw images must match what the model's preprocessing and input expect (before any training)."""
    x = prep.apply(ds.x[:2])
    want = dims[1:]
    pairs = zip(want, x.shape[1:], strict=False)
    if len(dims) != x.ndim or any(isinstance(d, int) and d > 0 and d != s for d, s in pairs):
        raise AcompileError(f"data {label!r} gives inputs of shape {list(x.shape[1:])} but the model expects "
                            f"{want}")


# ---------------------------------------------------------------------------------------------------
# data


def batch_stream(ds: Dataset, prep: Preprocessing, batch_size: int, rng: np.random.Generator,
                 augment: bool, prefetch: int = 3) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (and augmented) batches, prepared by a background thread while the model trains."""
    order = rng.permutation(len(ds))
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        try:
            for start in range(0, len(order), batch_size):
                if stop.is_set():
                    return
                idx = np.sort(order[start:start + batch_size])
                x = ds.x[idx]
                if augment:
                    x = augment_crop_flip(x, rng)
                q.put((torch.from_numpy(prep.apply(x)), torch.from_numpy(np.asarray(ds.y[idx], np.int64))))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)
            return
        q.put(None)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


@torch.no_grad()
def digital_accuracy(prepared: Prepared, ds: Dataset, batch_size: int = 500) -> dict[str, float]:
    """Clean (noise-free, fp32) accuracy and loss: the network the output file holds."""
    m, ctx = prepared.module, prepared.ctx
    device = next(m.parameters()).device
    was, active = m.training, ctx.active
    m.eval()
    ctx.active = False
    correct, loss = 0, 0.0
    try:
        for start in range(0, len(ds), batch_size):
            x = torch.from_numpy(prepared.preprocessing.apply(ds.x[start:start + batch_size])).to(device)
            y = torch.from_numpy(np.asarray(ds.y[start:start + batch_size], np.int64)).to(device)
            out = m(x).reshape(len(y), -1).float()
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    finally:
        m.train(was)
        ctx.active = active
    n = max(len(ds), 1)
    return {"accuracy": correct / n, "loss": loss / n}


# ---------------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(path: Path, prepared: Prepared, opt: torch.optim.Optimizer, state: dict) -> None:
    m = prepared.module
    arrays = {f"tensor/{k}": v for k, v in m.state_arrays().items()}
    for i, p in enumerate(m.params):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            arrays[f"momentum/{m.names[i]}"] = buf.detach().cpu().numpy()
    arrays["ranges"] = np.array([np.nan if ly.input_range is None else ly.input_range
                                 for ly in prepared.layers], np.float64)
    arrays["bounds"] = np.array([np.nan if ly.out_bound is None else ly.out_bound
                                 for ly in prepared.layers], np.float64)
    arrays["rng/torch"] = torch.get_rng_state().numpy()
    arrays["meta"] = np.array(json.dumps({"format": CHECKPOINT_FORMAT, **state}))
    write_files({path: lambda f: np.savez(f, **arrays)})  # all or nothing, even when interrupted


def load_checkpoint(path: Path, prepared: Prepared, opt: torch.optim.Optimizer) -> dict:
    m = prepared.module
    try:
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise AcompileError(f"{str(path)!r}: not an acompile finetune checkpoint")
            tensors = {k[7:]: d[k].copy() for k in d.files if k.startswith("tensor/")}
            momentum = {k[9:]: d[k].copy() for k in d.files if k.startswith("momentum/")}
            ranges, bounds = d["ranges"].copy(), d["bounds"].copy()
            rng = torch.from_numpy(d["rng/torch"].copy())
    except (OSError, ValueError, KeyError) as exc:
        raise AcompileError(f"{str(path)!r}: unreadable checkpoint ({exc})") from None
    if meta.get("parent_sha256") != prepared.parent_sha256:
        raise AcompileError(f"{str(path)!r}: checkpoint of another model (parent SHA-256 differs)")
    if set(tensors) != set(m.names) | set(m.buffer_names) or len(ranges) != len(prepared.layers):
        raise AcompileError(f"{str(path)!r}: checkpoint does not fit this model's graph")
    m.load_arrays(tensors)
    for i, p in enumerate(m.params):
        if m.names[i] in momentum:
            opt.state[p]["momentum_buffer"] = torch.from_numpy(momentum[m.names[i]]).to(p.device)
    for ly, r, b in zip(prepared.layers, ranges, bounds, strict=True):
        ly.input_range = None if np.isnan(r) else float(r)
        ly.out_bound = None if np.isnan(b) else float(b)
    torch.set_rng_state(rng)
    return meta


# ---------------------------------------------------------------------------------------------------
# the loop


def make_optimizer(module: OnnxGraphModule, cfg: FinetuneConfig) -> torch.optim.SGD:
    """SGD + Nesterov momentum; weight decay on crossbar/layer weights only (not biases, not BN)."""
    decay = [module.param(n) for n in module.names if module.roles[n] == "weight"]
    rest = [module.param(n) for n in module.names if module.roles[n] != "weight"]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


@torch.no_grad()
def clip_weights(prepared: Prepared, k: float) -> None:
    """Clip every crossbar layer's weight to [-k std(W), k std(W)] (Joshi 2020), in place; layers kept
    digital are not touched."""
    if k <= 0:
        return
    for name in prepared.analog_weights:
        w = prepared.module.param(name)
        bound = float(k * w.std())
        w.clamp_(-bound, bound)


def make_teacher(prepared: Prepared, device: torch.device) -> OnnxGraphModule:
    """The parent model as it came in, digital and frozen: its soft labels keep the fine-tuned network
    close to the function it was trained to compute (on the clean images too, when the training images
    are JPEG copies it never saw), while the noise teaches robustness (Rasch et al. 2023 distil HWA
    training from the floating-point model)."""
    teacher = OnnxGraphModule(prepared.original).to(device)
    teacher.move_constants(device)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def loss_fn(out: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, cfg: FinetuneConfig
            ) -> torch.Tensor:
    """Cross-entropy, mixed with T^2 KL(teacher || student) at temperature T when distilling (Hinton 2015:
    T^2 keeps the soft term's gradient scale independent of T)."""
    ce = F.cross_entropy(out, y)
    if soft is None or cfg.distill == 0:
        return ce
    t = cfg.distill_temp
    kd = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(soft / t, 1), reduction="batchmean",
                  log_target=True) * t * t
    return (1 - cfg.distill) * ce + cfg.distill * kd


def train(prepared: Prepared, cfg: FinetuneConfig, train_ds: Dataset, test_ds: Dataset | None, *,
          checkpoint: Path | None = None, resume: Path | None = None, compute: str = "cpu",
          progress: bool = True) -> dict[str, Any]:
    """Fine-tune in place; returns the history and the final digital test accuracy."""
    device = torch.device(compute)
    precision = resolve_precision(cfg.precision)
    if cfg.bn_restat and not any(n.op_type == "BatchNormalization" for n in prepared.module.model.graph.node):
        raise AcompileError("--bn-restat: the model has no BatchNormalization node whose statistics it could "
                            "re-estimate")
    torch.manual_seed(cfg.seed)
    if cfg.limit:
        train_ds = train_ds.subset(cfg.limit)
    eval_ds = test_ds.subset(cfg.eval_limit) if test_ds is not None else None
    m, ctx = prepared.module.to(device), prepared.ctx
    m.move_constants(device)
    ctx.channels_last = cfg.channels_last
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    for ly in prepared.layers:
        ly.generator = gen
    opt = make_optimizer(m, cfg)
    teacher = make_teacher(prepared, device) if cfg.distill > 0 else None
    augment = cfg.augment if cfg.augment is not None else (train_ds.x.ndim == 4 and train_ds.x.shape[1:3] ==
                                                           (32, 32))
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    history: list[dict] = []
    start = 0
    if resume is not None:
        meta = load_checkpoint(resume, prepared, opt)
        start, history = int(meta["epoch"]), list(meta.get("history", []))
        if start >= cfg.epochs:
            raise AcompileError(f"checkpoint {str(resume)!r} has already finished {start} of {cfg.epochs} "
                                "epochs")
    before = digital_accuracy(prepared, eval_ds) if (eval_ds is not None and start == 0) else None
    if before is not None and progress:
        progress_write(f"before fine-tuning: test accuracy {before['accuracy']:.4f} (digital)")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        m.train()
        ctx.active = True
        rng = np.random.default_rng([cfg.seed, epoch])  # data order and augmentation of this epoch
        gen.manual_seed(int(rng.integers(2**62)))  # its noise: a resumed run repeats the same draws
        loss_sum, correct, seen = 0.0, 0, 0
        bar = Progress(batch_stream(train_ds, prepared.preprocessing, cfg.batch_size, rng, augment),
                       total=steps, desc=f"finetune epoch {epoch + 1}/{cfg.epochs}", unit="batches",
                       enabled=progress)
        lr = cfg.lr
        for i, (x, y) in enumerate(bar):
            lr = lr_at(cfg, epoch * steps + i, steps)  # type: ignore[arg-type]  (same fields)
            for group in opt.param_groups:
                group["lr"] = lr
            x, y = x.to(device), y.to(device)
            step = epoch * steps + i
            ctx.observe = step < 50 or step % 20 == 0  # the range statistics need not be exact each step
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = m(x)
            out = out.reshape(len(y), -1).float()
            soft = None
            if teacher is not None:
                with torch.no_grad(), autocast:
                    soft = teacher(x).reshape(len(y), -1).float()
            loss = loss_fn(out, y, soft, cfg)
            if not torch.isfinite(loss):
                raise AcompileError(f"loss became {float(loss)} at epoch {epoch + 1}, step {i + 1}: "
                                    "lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clip_weights(prepared, cfg.knobs.clip)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.3g}")
        bar.close()
        ctx.active = False
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                  "train_accuracy": correct / max(seen, 1), "lr": lr, "seconds": round(time.time() - t0, 2),
                  "images_per_s": round(seen / max(time.time() - t0, 1e-9), 1)}
        if eval_ds is not None:
            ev = digital_accuracy(prepared, eval_ds)
            record.update(test_accuracy=ev["accuracy"], test_loss=ev["loss"])
        history.append(record)
        if progress:
            test = f"  test acc {record['test_accuracy']:.4f}" if "test_accuracy" in record else ""
            progress_write(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  train acc "
                       f"{record['train_accuracy']:.4f}{test}  {record['seconds']:.0f}s "
                       f"({record['images_per_s']:.0f} img/s)")
        if checkpoint is not None:
            save_checkpoint(checkpoint, prepared, opt, {"epoch": epoch + 1, "history": history,
                                                        "config": cfg.to_dict(),
                                                        "parent_sha256": prepared.parent_sha256})
    after = None
    if cfg.bn_restat:
        restat_bn(prepared, train_ds, cfg.bn_restat, cfg.batch_size,
                  np.random.default_rng([cfg.seed, cfg.epochs, 1]), augment, device)
        if eval_ds is not None:
            after = digital_accuracy(prepared, eval_ds)["accuracy"]
            if progress:
                progress_write(f"BN statistics re-estimated on {cfg.bn_restat} clean images: test acc "
                               f"{after:.4f} (digital)")
    m.eval()
    final = after if after is not None else (history[-1].get("test_accuracy") if history else None)
    return {"history": history, "before": before, "precision": precision,
            "train_samples": len(train_ds), "test_samples": len(eval_ds) if eval_ds is not None else 0,
            "test_accuracy": final, "test_accuracy_after_bn_restat": after}


def restat_bn(prepared: Prepared, ds: Dataset, n: int, batch_size: int, rng: np.random.Generator,
              augment: bool, device: torch.device) -> None:
    """Re-estimate every BN node's running statistics as the plain average over n clean training images.

    Training leaves the statistics of its noisy forward passes in the model; the digital network (and
    `global` compensation, which keeps the model's statistics) then normalizes clean activations with
    them. `bn` compensation re-estimates them on the chip anyway, so it does not depend on this."""
    m, ctx = prepared.module, prepared.ctx
    ctx.active = False  # clean: no weight noise, no periphery
    m.train()
    seen = 0
    try:
        with torch.no_grad():
            for x, _ in batch_stream(ds, prepared.preprocessing, batch_size, rng, augment):
                x = x[: n - seen].to(device)
                m.bn_momentum = len(x) / (seen + len(x))  # running average over the images so far
                m(x)
                seen += len(x)
                if seen >= n:
                    break
    finally:
        m.bn_momentum = None
        m.eval()


# ---------------------------------------------------------------------------------------------------
# output


def finetuned_model(prepared: Prepared, recipe: dict[str, Any]) -> onnx.ModelProto:
    """The original graph with the trained weights and the metadata that says where it came from."""
    out = prepared.module.write_back()
    meta = {p.key: p.value for p in out.metadata_props}
    if RECIPE_KEY in meta:
        recipe = {**recipe, "parent_recipe": json.loads(meta[RECIPE_KEY])} if meta[RECIPE_KEY].startswith(
            "{") else {**recipe, "parent_recipe": meta[RECIPE_KEY]}
    meta[PREPROCESSING_KEY] = prepared.preprocessing.to_json()
    meta[RECIPE_KEY] = json.dumps(recipe, sort_keys=True, default=str)
    meta[PARENT_KEY] = prepared.parent_sha256
    meta[TARGET_KEY] = json.dumps(prepared.target, sort_keys=True)
    contract.set_metadata(out, meta)
    return out


def verify_written(path: Path | bytes, prepared: Prepared, ds: Dataset, n: int = 16) -> float:
    """onnxruntime on the file to write (a path or its bytes) against the trained graph module (clean):
    max |difference|."""
    import onnxruntime as ort

    x = prepared.preprocessing.apply(ds.x[:n])
    sess = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                providers=["CPUExecutionProvider"])
    if isinstance(path, bytes):
        path = Path("the fine-tuned model")
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    m = prepared.module.eval()
    prepared.ctx.active = False
    with torch.no_grad():
        ref = m(torch.from_numpy(x).to(next(m.parameters()).device)).cpu().numpy()
    err = float(np.abs(got - ref).max())
    if not err <= 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise AcompileError(f"{str(path)!r}: written model differs from the trained graph by {err:.2e}")
    return err
