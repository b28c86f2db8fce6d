"""Glue between `acompile train` and the training code: resolve defaults, load data, train, export."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hwtrain.export import OUTPUT_NAME, export_bytes
from hwtrain.noise import HWAConfig
from hwtrain.train import DEFAULTS, TrainConfig, load_weights, train
from models import zoo
from runtime.data import PREPROCESSING_KEY, Preprocessing, load_dataset
from runtime.errors import AcompileError
from runtime.outputs import write_files
from runtime.physics import constants as C


def preprocessing_for(model_name: str, dataset: str, images: np.ndarray) -> Preprocessing:
    """The dataset's usual normalization in the model's layout; for a `.npz`/unnamed dataset, the one of
    the model's own dataset when the image shape fits (28x28x1 -> MNIST, 32x32x3 -> CIFAR-10)."""
    try:
        return zoo.default_preprocessing(model_name, dataset)
    except AcompileError:
        pass
    shape = [1, *images.shape[1:3]] if images.ndim == 3 else [images.shape[3], *images.shape[1:3]]
    for known in ("mnist", "cifar10"):
        pre = zoo.default_preprocessing(model_name, known)
        if pre.input_shape == shape:
            return pre
    raise AcompileError(
        f"dataset {dataset!r}: images of shape {list(images.shape[1:])} fit no known "
        "preprocessing (28x28 grayscale or 32x32 RGB)"
    )


def build_for(model_name: str, pre: Preprocessing, dataset: str) -> torch.nn.Module:
    """The zoo model sized for the dataset's images (mlp adapts its input width)."""
    native = zoo.default_preprocessing(model_name)
    if model_name == "mlp":
        c, h, w = pre.input_shape
        return zoo.build(model_name, in_features=c * h * w)
    if pre.input_shape != native.input_shape:
        raise AcompileError(
            f"model {model_name!r} takes {native.input_shape} (C, H, W) images; dataset {dataset!r} has "
            f"{pre.input_shape}"
        )
    return zoo.build(model_name)


def run_training(
    model_name: str,
    *,
    dataset: str | None = None,
    algorithm: str = "hwa",
    epochs: int | None = None,
    noise: float | None = None,
    noise_shape: str = "gaussian",
    clip: float | None = None,
    dac_bits: int = 0,
    adc_bits: int = 0,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    schedule: str = "cosine",
    seed: int = 0,
    data_root: str | None = None,
    out: str | None = None,
    json_path: str | None = None,
    checkpoint: str | None = None,
    resume: str | None = None,
    limit: int | None = None,
    init: str | None = None,
    eval_limit: int | None = None,
    compute: str = "cpu",
    progress: bool = True,
) -> dict:
    """Train a zoo model plainly or hardware-aware; export ONNX (+ recipe) and metrics JSON if asked."""
    model_name = model_name.lower()
    zoo.default_dataset(model_name)  # unknown model -> AcompileError before any data is loaded
    dataset = dataset or zoo.default_dataset(model_name)
    defaults = DEFAULTS.get(model_name, DEFAULTS["mlp"])
    if algorithm == "plain":
        if noise or clip:
            raise AcompileError("--algorithm plain trains without noise and clipping; drop --noise/--clip")
        noise, clip = 0.0, 0.0
    elif algorithm != "hwa":
        raise AcompileError(f"algorithm {algorithm!r} is not a torch training algorithm (hwa, plain)")
    hwa = HWAConfig(
        noise=C.HWA_ETA_TRAIN if noise is None else noise,
        noise_shape=noise_shape,
        clip=C.HWA_CLIP_ALPHA if clip is None else clip,
        dac_bits=dac_bits,
        adc_bits=adc_bits,
    )
    cfg = TrainConfig(
        model=model_name,
        dataset=dataset,
        epochs=defaults["epochs"] if epochs is None else epochs,
        lr=defaults["lr"] if lr is None else lr,
        batch_size=defaults["batch_size"] if batch_size is None else batch_size,
        weight_decay=defaults["weight_decay"] if weight_decay is None else weight_decay,
        schedule=schedule,
        warmup_epochs=defaults["warmup_epochs"],
        seed=seed,
        limit=limit,
        hwa=hwa,
    )
    if eval_limit is not None and eval_limit < 1:
        raise AcompileError(f"--eval-limit must be >= 1, got {eval_limit}")
    train_ds = load_dataset(dataset, "train", root=data_root)
    if len(train_ds) == 0:
        raise AcompileError(f"dataset {dataset!r}: the train split has no images")
    pre = preprocessing_for(model_name, dataset, train_ds.x)
    torch.manual_seed(seed)  # the initial weights are part of the recipe
    model = build_for(model_name, pre, dataset)
    if init:
        load_weights(model, init)
    try:
        test_ds = load_dataset(dataset, "test", root=data_root).subset(eval_limit)
    except AcompileError as exc:
        print(f"acompile: warning: no test split ({exc}); training without evaluation", file=sys.stderr)
        test_ds = None
    t0 = time.time()
    metrics = train(
        model,
        cfg,
        train_ds,
        test_ds,
        pre,
        compute=compute,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
    )
    metrics["train_seconds"] = round(time.time() - t0, 1)
    options = {
        "dataset": dataset,
        "algorithm": algorithm,
        "epochs": cfg.epochs,
        "noise": hwa.noise,
        "noise_shape": noise_shape if noise_shape != "gaussian" else None,
        "clip": hwa.clip,
        "dac_bits": dac_bits or None,
        "adc_bits": adc_bits or None,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay,
        "schedule": schedule,
        "seed": seed,
        "limit": limit,
        "init": init,
        "eval_limit": eval_limit,
        "out": out,
    }
    recipe = {
        "model": model_name,
        "dataset": dataset,
        "algorithm": algorithm,
        "epochs": cfg.epochs,
        "noise": hwa.noise,
        "noise_shape": hwa.noise_shape,
        "clip": hwa.clip,
        "dac_bits": dac_bits,
        "adc_bits": adc_bits,
        "seed": seed,
        "init": init,
        "optimizer": f"SGD momentum {cfg.momentum} nesterov {cfg.nesterov}",
        "lr": cfg.lr,
        "lr_schedule": f"{schedule} per step, warm-up {cfg.warmup_epochs} epochs",
        "batch_size": cfg.batch_size,
        "weight_decay": cfg.weight_decay,
        "augment": cfg.augment,
        "train_samples": metrics["train_samples"],
        "test_samples": metrics["test_samples"],
        "test_set": f"{test_ds.name} (test split)" if test_ds is not None else None,
        "digital_test_accuracy": metrics["test_accuracy"],
        "train_seconds": metrics["train_seconds"],
        "command": command_line(model_name, options),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    reconstruct = metrics.get("task") == "reconstruct"
    if reconstruct:
        recipe.update(
            task="reconstruct",
            loss="MSE against the input (normalized space)",
            digital_test_rel_l2=metrics["test_rel_l2"],
        )
        if test_ds is not None:
            lenet = lenet_accuracy_on_reconstructions(model, test_ds, pre)
            metrics.update(lenet)
            recipe.update(lenet)
    metrics["recipe"] = recipe
    files: dict[Path, bytes | str] = {}  # one set, the model moved into place last
    if out:
        files[Path(out)] = export_bytes(model, example_input=_example(pre), preprocessing=pre, recipe=recipe,
                                        output_name="reconstruction" if reconstruct else OUTPUT_NAME)
        metrics["onnx"] = str(out)
    if json_path:
        files[Path(json_path)] = json.dumps(metrics, indent=1, default=str) + "\n"
    write_files(files, primary=out)
    if out and reconstruct:
        rel = metrics["test_rel_l2"]
        lenet = _pct(metrics.get("lenet5_accuracy_on_reconstructions"))
        print(f"wrote {out} (digital test relative L2 error {'n/a' if rel is None else f'{rel:.4f}'}, "
              f"LeNet-5 accuracy on reconstructions {lenet})", file=sys.stderr)
    elif out:
        print(f"wrote {out} (digital test accuracy {_pct(metrics['test_accuracy'])})", file=sys.stderr)
    return metrics


LENET5 = Path(zoo.__file__).resolve().parent / "lenet5-mnist.onnx"


def lenet_accuracy_on_reconstructions(model: torch.nn.Module, ds, pre: Preprocessing,
                                      lenet: str | Path = LENET5, batch_size: int = 500) -> dict:
    """Accuracy of the bundled LeNet-5 (onnxruntime) on the model's digital reconstructions of `ds`, and
    on the original images for reference. The reconstructions are mapped into LeNet's input space (its
    `acompile.preprocessing`); for the zoo autoencoder on MNIST that mapping is the identity."""
    import onnx
    import onnxruntime as ort

    from hwtrain.train import batches, to_pixels

    lenet = Path(lenet)
    if not lenet.exists() or pre.input_shape != [1, 28, 28]:
        return {}
    meta = {p.key: p.value for p in onnx.load(str(lenet), load_external_data=False).metadata_props}
    lpre = Preprocessing.from_json(meta[PREPROCESSING_KEY])
    sess = ort.InferenceSession(str(lenet), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    mean = torch.tensor(lpre.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(lpre.std).reshape(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    hits_rec = hits_orig = 0
    with torch.no_grad():
        for x, y in batches(ds, pre, batch_size):
            rec = (to_pixels(model(x), pre) - mean) / std
            orig = (to_pixels(x, pre) - mean) / std
            for t, which in ((rec, "rec"), (orig, "orig")):
                pred = sess.run(None, {name: t.reshape(len(t), 1, 28, 28).numpy().astype(np.float32)})[0]
                hits = int((pred.argmax(1) == y.numpy()).sum())
                if which == "rec":
                    hits_rec += hits
                else:
                    hits_orig += hits
    model.train(was_training)
    n = max(len(ds), 1)
    return {"lenet5_accuracy_on_reconstructions": hits_rec / n, "lenet5_accuracy_on_originals": hits_orig / n}


def command_line(model: str, options: dict) -> str:
    """The fully resolved `acompile train ...` line that reproduces a run (stored in the recipe)."""
    parts = ["acompile", "train", model]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "-o" if key == "out" else "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _example(pre: Preprocessing) -> torch.Tensor:
    c, h, w = pre.input_shape
    return torch.randn((2, c * h * w) if pre.layout == "flat" else (2, c, h, w))


def _pct(acc: float | None) -> str:
    return "n/a" if acc is None else f"{100 * acc:.2f} %"
