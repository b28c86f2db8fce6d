"""Training loops of the networks beyond the MLP (nets.py): cnn on CIFAR-10, charlstm on Tiny Shakespeare,
gan on MNIST. The same script, seed, data order and epochs serve every algorithm: after each backward pass
every analog layer's `update(lr)` applies its UpdateRule (fp32: exact SGD; mixed precision: chi + PCM
SET pulses). Plain SGD throughout (the rules take lr * gradient), lr decayed by `lr_decay` per epoch.

Per epoch we record the training loss (mean, and over the first / last fifth of the batches), the test
metric, wall time, and for rules that count them the SET pulses and refreshes per weight.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwtrain.inmemory.nets import Z_DIM
from hwtrain.inmemory.params import NETS
from hwtrain.inmemory.rules import rule_stats
from runtime.errors import AcompileError
from runtime.progress import Progress
from runtime.progress import write as progress_write

DEFAULTS = {  # model -> (lr, batch size), the recorded settings (bench/RESULTS-inmemory.md)
    "cnn": (0.02, 32),
    "charlstm": (3.0, 32),
    "gan": (0.2, 64),
}


def _device_counts(layers) -> tuple[int, int, int]:
    """(SET pulses, refreshes, weights) summed over layers whose rule counts pulses."""
    pulses = refreshes = weights = 0
    for layer in layers:
        rule = layer.rule
        weights += rule.weights().numel()
        pulses += int(getattr(rule, "pulses", 0))
        if hasattr(rule, "pair"):
            refreshes += int(rule.pair.refreshes)
    return pulses, refreshes, weights


def _layer_stats(layer) -> dict:
    rule = layer.rule
    out = {"layer": type(layer).__name__, **rule_stats(rule), "shape": list(rule.weights().shape)}
    if hasattr(rule, "pair"):
        out["w_max"] = float(rule.w_scale)
    return out


def _fifths(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 5)
    return float(np.mean(losses[:k])), float(np.mean(losses[-k:]))


def train_net(model: str, dataset: str, algorithm: str, device: str, epochs: int, *, p: dict[str, float],
              batch_size: int | None, lr: float | None, seed: int, compute: str = "cpu",
              progress: bool = True, samples_png: Path | None = None) -> dict:
    if dataset != NETS[model]:
        raise AcompileError(f"model {model!r} trains on dataset {NETS[model]!r}, got {dataset!r}")
    from hwtrain.inmemory.network import build_network

    lr0 = DEFAULTS[model][0] if lr is None else float(lr)
    batch = DEFAULTS[model][1] if batch_size is None else int(batch_size)
    if batch < 1:
        raise AcompileError(f"batch size must be >= 1, got {batch}")
    gen = torch.Generator(device=compute)
    gen.manual_seed(seed)
    task = {"cnn": _CNNTask, "charlstm": _CharTask, "gan": _GANTask}[model](p, compute, seed)
    net = build_network(model, algorithm, device, p, batch, gen, compute)
    layers = net.analog_layers()
    history: list[dict] = []
    initial = task.evaluate(net)
    for epoch in range(epochs):
        lr_e = lr0 * p["lr_decay"] ** epoch
        order = task.order(gen)
        starts = list(range(0, len(order), batch))
        pulses0, refresh0, n_weights = _device_counts(layers)
        losses: list[float] = []
        t0 = time.perf_counter()
        bar = Progress(starts, desc=f"{model} {algorithm} epoch {epoch + 1}/{epochs}", unit="batches",
                       enabled=progress)
        for i in bar:
            losses.append(task.step(net, order[i:i + batch], lr_e, gen))
        seconds = time.perf_counter() - t0
        pulses1, refresh1, _ = _device_counts(layers)
        metric = task.evaluate(net)
        first, last = _fifths(losses)
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "loss_first_fifth": first,
               "loss_last_fifth": last, "seconds": seconds, "lr": lr_e, "updates": len(starts),
               "set_pulses_per_weight": (pulses1 - pulses0) / max(n_weights, 1),
               "refreshes_per_weight": (refresh1 - refresh0) / max(n_weights, 1), **metric}
        history.append(rec)
        progress_write(f"epoch {epoch + 1}: loss {rec['train_loss']:.4f}  {task.describe(metric)}  "
                       f"({seconds:.1f} s, {rec['set_pulses_per_weight']:.3g} pulses/weight)",
                       file=sys.stderr)
    final = history[-1] if history else initial
    metrics = {
        "schema": "acompile.inmemory-net/1", "model": model, "dataset": dataset, "algorithm": algorithm,
        "device": device, "epochs": epochs, "batch_size": batch, "lr": lr0, "seed": seed, "params": p,
        "initial": initial, "history": history, **task.sizes(),
        "final": {k: v for k, v in final.items() if k not in ("epoch", "lr")},
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])) if history else 0.0,
        "weights": _device_counts(layers)[2],
        "layers": [_layer_stats(layer) for layer in layers],
    }
    if "test_accuracy" in final:  # what `acompile sweep` tabulates
        metrics["test_accuracy"] = final["test_accuracy"]
    if model == "gan" and samples_png is not None:
        task.write_samples(net, samples_png)
        metrics["samples_png"] = str(samples_png)
    return metrics


class _CNNTask:
    """CIFAR-10 (the full JPEG copy) in uint8, normalized per batch; tested on the JPEG test set and on
    the exact test subset (cifar10-exact: test-partial). No augmentation."""

    def __init__(self, p: dict[str, float], compute: str, seed: int) -> None:
        from runtime.data import CIFAR10_MEAN, CIFAR10_STD, load_dataset

        tr = load_dataset("cifar10", "train").subset(int(p["limit"]) or None)
        te = load_dataset("cifar10", "test").subset(int(p["test_limit"]) or None)
        ex = load_dataset("cifar10-exact", "test").subset(int(p["test_limit"]) or None)
        self.compute = compute
        self.mean = torch.tensor(CIFAR10_MEAN, device=compute).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD, device=compute).view(1, 3, 1, 1)
        self.x, self.y = self._t(tr.x), torch.from_numpy(tr.y).to(compute)
        self.tests = {"test": (self._t(te.x), torch.from_numpy(te.y).to(compute)),
                      "exact": (self._t(ex.x), torch.from_numpy(ex.y.astype(np.int64)).to(compute))}

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.compute)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) / 255.0 - self.mean) / self.std

    def sizes(self) -> dict:
        return {"train_images": len(self.y), "test_images": len(self.tests["test"][1]),
                "exact_test_images": len(self.tests["exact"][1])}

    def order(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.y), generator=gen, device=self.compute)

    def step(self, net, idx: torch.Tensor, lr: float, gen: torch.Generator) -> float:
        loss = F.cross_entropy(net(self._prep(self.x[idx])), self.y[idx])
        loss.backward()
        for layer in net.analog_layers():
            layer.update(lr)
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, net) -> dict:
        out = {}
        for name, (x, y) in self.tests.items():
            correct = 0
            for i in range(0, len(y), 500):
                correct += int((net(self._prep(x[i:i + 500])).argmax(1) == y[i:i + 500]).sum())
            out[f"{name}_accuracy"] = correct / max(len(y), 1)
        return out

    def describe(self, m: dict) -> str:
        return f"test {100 * m['test_accuracy']:.2f} %  exact {100 * m['exact_accuracy']:.2f} %"


class _CharTask:
    """Tiny Shakespeare: the training text cut into non-overlapping sequences of seq_len + 1 characters
    (shuffled each epoch, each starting from a zero state); validation bits per character over the whole
    validation text, read as 64 contiguous streams whose state carries across chunks of seq_len."""

    STREAMS = 64

    def __init__(self, p: dict[str, float], compute: str, seed: int) -> None:
        from hwtrain.inmemory.text_data import load_tinyshakespeare

        corpus = load_tinyshakespeare()
        self.seq = int(p["seq_len"])
        train = corpus.train[: int(p["limit"])] if p["limit"] else corpus.train
        val = corpus.val[: int(p["test_limit"])] if p["test_limit"] else corpus.val
        n = (len(train) - 1) // self.seq
        if n < 1:
            raise AcompileError(f"charlstm: {len(train)} training characters, need more than seq_len")
        self.inputs = train[: n * self.seq].view(n, self.seq).to(compute)
        self.targets = train[1: n * self.seq + 1].view(n, self.seq).to(compute)
        streams = min(self.STREAMS, max(1, (len(val) - 1) // self.seq))
        per = (len(val) - 1) // streams
        self.val_in = val[: streams * per].view(streams, per).to(compute)
        self.val_out = val[1: streams * per + 1].view(streams, per).to(compute)
        self.compute = compute
        self.train_chars = len(train)

    def sizes(self) -> dict:
        return {"train_chars": self.train_chars, "train_sequences": len(self.inputs),
                "val_chars": self.val_in.numel()}

    def order(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.inputs), generator=gen, device=self.compute)

    def step(self, net, idx: torch.Tensor, lr: float, gen: torch.Generator) -> float:
        logits = net(self.inputs[idx])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets[idx].reshape(-1))
        loss.backward()
        for layer in net.analog_layers():
            layer.update(lr)
        return float(loss.detach()) / math.log(2)  # bits per character

    @torch.no_grad()
    def evaluate(self, net) -> dict:
        state, total, count = None, 0.0, 0
        for i in range(0, self.val_in.shape[1], self.seq):
            x = F.one_hot(self.val_in[:, i:i + self.seq], net.vocab).to(torch.float32)
            h, state = net.lstm(x, state)
            b, t, hs = h.shape
            logits = net.fc(h.reshape(b * t, hs))
            target = self.val_out[:, i:i + self.seq].reshape(-1)
            total += float(F.cross_entropy(logits, target, reduction="sum"))
            count += b * t
        return {"val_bpc": total / max(count, 1) / math.log(2)}

    def describe(self, m: dict) -> str:
        return f"val {m['val_bpc']:.3f} bits/char"


class _GANTask:
    """MNIST in [-1, 1]; one discriminator step (real + fake in one batch, BCE) then one generator step
    (non-saturating loss through the analog D, whose recorded rows are discarded) per batch. The loss
    recorded is D's. Evaluation: 2000 digits from a fixed noise (its own generator, so the training
    RNG stream is the same for every algorithm) judged by LeNet-5 against the 10k real test digits."""

    N_EVAL = 2000

    def __init__(self, p: dict[str, float], compute: str, seed: int) -> None:
        from hwtrain.inmemory.gan_scores import LeNetJudge
        from runtime.data import load_dataset

        tr = load_dataset("mnist", "train").subset(int(p["limit"]) or None)
        te = load_dataset("mnist", "test").subset(int(p["test_limit"]) or None)
        self.x = torch.from_numpy(np.array(tr.x.reshape(len(tr.x), -1))).to(compute)
        self.compute = compute
        self.judge = LeNetJudge()
        real = te.x.reshape(len(te.x), -1).astype(np.float32) / 255.0
        _, self.real_features = self.judge.run(real)
        self.real_scores = None
        g = torch.Generator(device=compute)
        g.manual_seed(10_000 + seed)
        self.z_eval = torch.randn((self.N_EVAL, Z_DIM), generator=g, device=compute)
        self.g_losses: list[float] = []
        self.d_lr, self.real_label = p["d_lr"], p["real_label"]

    def sizes(self) -> dict:
        return {"train_images": len(self.x), "test_images": len(self.real_features),
                "eval_samples": self.N_EVAL}

    def order(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.x), generator=gen, device=self.compute)

    def step(self, net, idx: torch.Tensor, lr: float, gen: torch.Generator) -> float:
        real = self.x[idx].to(torch.float32) / 127.5 - 1.0
        b = len(idx)
        z = torch.randn((b, Z_DIM), generator=gen, device=self.compute)
        with torch.no_grad():
            fake = net.generate(z)
        logits = net.discriminate(torch.cat([real, fake]))
        target = torch.cat([torch.full((b,), self.real_label, device=self.compute),
                            torch.zeros(b, device=self.compute)])
        d_loss = F.binary_cross_entropy_with_logits(logits, target)
        d_loss.backward()
        for layer in net.discriminator_layers():
            layer.update(lr * self.d_lr)
        z = torch.randn((b, Z_DIM), generator=gen, device=self.compute)
        g_loss = F.binary_cross_entropy_with_logits(net.discriminate(net.generate(z)),
                                                    torch.ones(b, device=self.compute))
        g_loss.backward()
        for layer in net.generator_layers():
            layer.update(lr)
        for layer in net.discriminator_layers():
            layer.discard()
        self.g_losses.append(float(g_loss.detach()))
        return float(d_loss.detach())

    @torch.no_grad()
    def samples(self, net) -> np.ndarray:
        return ((net.generate(self.z_eval) + 1) / 2).clamp(0, 1).cpu().numpy()

    def evaluate(self, net) -> dict:
        from hwtrain.inmemory.gan_scores import scores

        out = scores(self.judge, self.samples(net), self.real_features)
        if self.g_losses:
            out["g_loss"] = float(np.mean(self.g_losses))
            self.g_losses = []
        return out

    def write_samples(self, net, path: Path) -> None:
        from hwtrain.inmemory.gan_scores import write_grid

        write_grid(self.samples(net), path)

    def describe(self, m: dict) -> str:
        return (f"LeNet conf {m['lenet_confidence']:.3f}  spread {m['class_entropy_bits']:.2f} bits  "
                f"FD {m['frechet_lenet']:.1f}")
