"""`train_inmemory`: train a network whose weight updates are device pulses, evaluate, checkpoint, export."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hwtrain.inmemory import checkpoint
from hwtrain.inmemory.network import AnalogMLP, build_network
from hwtrain.inmemory.params import (
    ALGORITHMS,
    NETS,
    check_algorithm,
    check_net_outputs,
    resolve,
    training_devices,
)
from hwtrain.inmemory.rules import rule_stats
from runtime.errors import AcompileError
from runtime.outputs import write_files
from runtime.progress import Progress
from runtime.progress import write as progress_write

# lr 0.1 with batch 25 and lr_decay 0.9 per epoch is the recorded setting (bench/RESULTS-inmemory.md).
DEFAULT_LR = {"fp32": 0.1, "mixed-precision": 0.1, "sgd": 0.1, "ttv2": 0.1, "cttv2": 0.1, "agad": 0.1}
DEFAULT_BATCH = 25


def load_split(dataset: str, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as flat float32 (the dataset's default normalization) and int64 labels."""
    from runtime.data import default_preprocessing, load_dataset

    ds = load_dataset(dataset, split)
    if limit:
        ds = ds.subset(limit)
    x = default_preprocessing(dataset, "flat").apply(ds.x)
    return torch.from_numpy(x), torch.from_numpy(np.asarray(ds.y, dtype=np.int64))


@torch.no_grad()
def evaluate(net: AnalogMLP, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Test accuracy with the analog forward pass (noisy reads, DAC/ADC) as deployed."""
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / max(len(y), 1)


def train_inmemory(
    model: str,
    dataset: str,
    algorithm: str,
    device: str,
    epochs: int,
    *,
    params: dict[str, float] | None = None,
    batch_size: int | None = DEFAULT_BATCH,
    lr: float | None = None,
    seed: int = 0,
    out: Path | None = None,
    json_path: Path | None = None,
    resume: Path | None = None,
    compute: str = "cpu",
    progress: bool = True,
    samples_png: Path | None = None,
) -> dict:
    """Train `model` in memory; returns metrics (per-epoch test accuracy, time, pulses, refreshes).

    `cnn`, `charlstm` and `gan` (hwtrain/inmemory/nets.py) train through train_nets.train_net (their own
    metrics; no ONNX export or checkpoints); the gan writes a sample grid PNG to samples_png (default:
    beside json_path, `<stem>-samples.png`).

    resume: a checkpoint path (``.npz`` + ``.json`` beside it); loaded if it exists, written after every
    epoch. With out set, the trained weights are exported to ONNX (and checkpointed next to it).
    """
    if algorithm not in ALGORITHMS:
        raise AcompileError(f"unknown in-memory algorithm {algorithm!r}; "
                            f"choose one of {', '.join(ALGORITHMS)}")
    if device not in training_devices():
        raise AcompileError(f"unknown training device {device!r}; "
                            f"choose one of {', '.join(training_devices())}")
    check_algorithm(algorithm, device)
    if epochs < 0:
        raise AcompileError(f"epochs must be >= 0, got {epochs}")
    if model in NETS:
        return _train_net(model, dataset, algorithm, device, epochs, params=params, batch_size=batch_size,
                          lr=lr, seed=seed, out=out, json_path=json_path, resume=resume, compute=compute,
                          progress=progress, samples_png=samples_png)
    batch_size = DEFAULT_BATCH if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise AcompileError(f"batch size must be >= 1, got {batch_size}")
    if lr is not None and lr <= 0:
        raise AcompileError(f"learning rate must be > 0, got {lr}")
    p = resolve(params)
    lr0 = DEFAULT_LR[algorithm] if lr is None else float(lr)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    gen = torch.Generator(device=compute)
    gen.manual_seed(seed)
    x_train, y_train = load_split(dataset, "train", int(p["limit"]))
    x_test, y_test = load_split(dataset, "test", int(p["test_limit"]))
    x_train, y_train, x_test, y_test = (t.to(compute) for t in (x_train, y_train, x_test, y_test))
    net = build_network(model, algorithm, device, p, batch_size, gen, compute)

    ckpt = resume if resume is not None else (Path(out).with_suffix(".ckpt.npz") if out else None)
    history: list[dict] = []
    start_epoch = 0
    if ckpt is not None and checkpoint.exists(ckpt):
        meta = checkpoint.load(ckpt, net, gen, expect={"model": model, "algorithm": algorithm,
                                                         "device": device, "params": p})
        history, start_epoch = meta["history"], meta["epoch"]

    layers = net.analog_layers()
    n = len(y_train)
    for epoch in range(start_epoch, epochs):
        lr_e = lr0 * p["lr_decay"] ** epoch
        perm = torch.randperm(n, generator=gen, device=compute)
        t0 = time.perf_counter()
        loss_sum = 0.0
        bar = Progress(range(0, n, batch_size), desc=f"{algorithm} epoch {epoch + 1}/{epochs}",
                       unit="batches", enabled=progress)
        for i in bar:
            idx = perm[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            loss.backward()
            for layer in layers:
                layer.update(lr_e)
            loss_sum += float(loss.detach()) * len(idx)
        seconds = time.perf_counter() - t0
        acc = evaluate(net, x_test, y_test)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n, "test_accuracy": acc,
                        "seconds": seconds, "lr": lr_e})
        progress_write(f"epoch {epoch + 1}: loss {loss_sum / n:.4f}  test {100 * acc:.2f} %  "
                       f"({seconds:.1f} s)", file=sys.stderr)
        if ckpt is not None:
            checkpoint.save(ckpt, net, gen, {"model": model, "algorithm": algorithm, "device": device,
                                             "params": p, "epoch": epoch + 1, "history": history,
                                             "seed": seed})

    final = history[-1]["test_accuracy"] if history else evaluate(net, x_test, y_test)
    metrics = {
        "schema": "acompile.inmemory/1", "model": model, "dataset": dataset, "algorithm": algorithm,
        "device": device, "epochs": epochs, "batch_size": batch_size, "lr": lr0, "seed": seed,
        "params": p, "test_accuracy": final,
        "best_test_accuracy": max((h["test_accuracy"] for h in history), default=final),
        "history": history, "train_images": n, "test_images": len(y_test),
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else 0.0,
        "layers": [rule_stats(layer.rule) for layer in layers],
    }
    files: dict[Path, bytes | str] = {}  # one set, the model moved into place last
    if out is not None:
        files[Path(out)] = export_trained(net, model, dataset, None, metrics)
        metrics["onnx"] = str(out)
    if json_path is not None:
        files[Path(json_path)] = json.dumps(metrics, indent=2)
    write_files(files, primary=out)
    return metrics


def _train_net(model: str, dataset: str, algorithm: str, device: str, epochs: int, *, params, batch_size,
               lr, seed, out, json_path, resume, compute, progress, samples_png) -> dict:
    from hwtrain.inmemory.train_nets import train_net

    check_net_outputs(model, out, resume)
    if batch_size is not None and int(batch_size) < 1:
        raise AcompileError(f"batch size must be >= 1, got {batch_size}")
    p = resolve(params)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    if samples_png is None and json_path is not None and model == "gan":
        samples_png = Path(json_path).with_name(Path(json_path).stem + "-samples.png")
    metrics = train_net(model, dataset, algorithm, device, epochs, p=p, batch_size=batch_size, lr=lr,
                        seed=seed, compute=compute, progress=progress, samples_png=samples_png)
    if json_path is not None:
        write_files({Path(json_path): json.dumps(metrics, indent=2)})
    return metrics


def effective_torch_model(net: AnalogMLP, model: str) -> torch.nn.Module:
    """The zoo's model (or an equivalent) holding the trained effective weights, for ONNX export."""
    try:
        from models.zoo import build
    except ImportError:
        build = None
    if build is not None:
        tm = build(model)
    else:
        tm = _FallbackMLP()
    with torch.no_grad():
        for name, layer in (("fc1", net.fc1), ("fc2", net.fc2)):
            target = getattr(tm, name)
            target.weight.copy_(layer.rule.weights().cpu())
            target.bias.copy_(layer.bias.detach().cpu())
    return tm.eval()


class _FallbackMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 250)
        self.fc2 = torch.nn.Linear(250, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def export_trained(net: AnalogMLP, model: str, dataset: str, out: Path | None, metrics: dict) -> Path | bytes:
    """Effective weights -> torch model -> hwtrain.export (lazy import): written to `out` (returns the
    path), or with out None the ONNX file's bytes (the caller writes them with its other outputs)."""
    try:
        from hwtrain.export import export_bytes, export_onnx
    except ImportError as exc:
        raise AcompileError(f"cannot export {out}: hwtrain.export is not available ({exc})") from exc
    from runtime.data import default_preprocessing

    tm = effective_torch_model(net, model)
    layout = "flat"
    try:
        from models.zoo import default_preprocessing as zoo_pre

        pre = zoo_pre(model)
        layout = pre.layout
    except (ImportError, AttributeError):
        pre = default_preprocessing(dataset, layout)
    shape = (1, 784) if layout == "flat" else (1, 1, 28, 28)
    recipe = {"kind": "inmemory", "algorithm": metrics["algorithm"], "device": metrics["device"],
              "epochs": metrics["epochs"], "lr": metrics["lr"], "batch_size": metrics["batch_size"],
              "params": metrics["params"], "test_accuracy": metrics["test_accuracy"]}
    if out is None:
        return export_bytes(tm, example_input=torch.zeros(shape), preprocessing=pre, recipe=recipe)
    return export_onnx(tm, out, example_input=torch.zeros(shape), preprocessing=pre, recipe=recipe)
