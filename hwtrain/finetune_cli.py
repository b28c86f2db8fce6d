"""`acompile finetune MODEL.onnx --target pcm --data cifar10 --epochs 5 -o MODEL.hwa.onnx`.

Imports only click and the torch-free runtime.options / runtime.outputs at module level; torch and the
training code load when the command runs. Every option (by its type, runtime.options) and every output
path (runtime.outputs.check_outputs) is checked before the model is read, so a typo costs seconds, not an
epoch.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from runtime import options as opt
from runtime.errors import AcompileError
from runtime.outputs import ONNX, check_outputs, interrupt_on_sigterm, write_files

ETA_DEFAULT = 0.038  # runtime.physics.constants.HWA_ETA_TRAIN (Joshi 2020); literal so --help needs no torch
CLIP_DEFAULT = 2.5  # runtime.physics.constants.HWA_CLIP_ALPHA


def default_output(model: Path) -> Path:
    stem = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return model.with_name(f"{stem}.hwa.onnx")


@click.command("finetune")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_spec", default="pcm", show_default=True,
              help="Target the model will run on: built-in (pcm, hermes, ideal) or a TOML file.")
@click.option("--data", default=None,
              help="Training data: mnist, fashion-mnist, cifar10, NAME:PATH or images.npz (x, y; "
                   "x_train/y_train for the train split); a comma list adds the train splits of the "
                   "others to the first (whose test split scores each epoch). Default: the model's "
                   "metadata dataset.")
@click.option("--epochs", type=opt.NONNEG_INT, default=5, show_default=True,
              help="Training epochs (0 only with --bn-restat: re-estimate a trained model's statistics).")
@click.option("--lr", type=opt.POS_FLOAT, default=0.01, show_default=True,
              help="Peak learning rate (cosine decay).")
@click.option("--batch-size", type=opt.POS_INT, default=128, show_default=True)
@click.option("--weight-decay", type=opt.NONNEG_FLOAT, default=1e-4, show_default=True)
@click.option("--momentum", type=opt.FRACTION, default=0.9, show_default=True, help="In [0, 1).")
@click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine",
              show_default=True)
@click.option("--noise", type=opt.FRACTION, default=ETA_DEFAULT, show_default=True,
              help="Weight-noise eta in [0, 1) (Joshi 2020: 0.038 of max|W|; 0 = off).")
@click.option("--noise-shape", type=click.Choice(["device", "gaussian"]), default="device", show_default=True,
              help="device: the target device model's programming noise, scaled by eta/0.038; gaussian: "
                   "N(0, eta max|W|) per weight.")
@click.option("--noise-times", default=None, metavar="T_MIN,T_MAX", type=opt.POS_TIMES,
              help="With --noise-shape device: also drift the devices to a time drawn log-uniformly in "
                   "[T_MIN, T_MAX] (e.g. 1s,1y) with 1/f read noise, and compensate globally after the ADC.")
@click.option("--clip", type=opt.NONNEG_FLOAT, default=CLIP_DEFAULT, show_default=True,
              help="Clip weights to k std(W) after each step (0 = off; Joshi 2.0-2.5).")
@click.option("--no-periphery", is_flag=True,
              help="Train without the DAC / output noise / ADC of the target.")
@click.option("--dac-bits", type=opt.BITS, default=None,
              help="Override the target's DAC bits (0 = ideal, or 2..16).")
@click.option("--adc-bits", type=opt.BITS, default=None,
              help="Override the target's ADC bits (0 = ideal, or 2..16).")
@click.option("--out-noise", type=opt.NONNEG_FLOAT, default=None,
              help="Override the target's output noise (>= 0).")
@click.option("--out-bound", type=opt.BOUND, default=None,
              help="Override the ADC bound: a number > 0 or 'calibrated'.")
@click.option("--digital", multiple=True, metavar="NAME,...", help="Layers kept digital (as for compile).")
@click.option("--replicate", type=click.Choice(["none", "free-rows"]), default=None,
              help="Train for small layers replicated in their tiles' free rows (as for compile) "
                   "[default: from target].")
@click.option("--mean", type=opt.FLOATS, default=None,
              help="Preprocessing mean per channel (models without metadata).")
@click.option("--std", type=opt.POS_FLOATS, default=None,
              help="Preprocessing std per channel, each > 0 (models without metadata).")
@click.option("--scale", type=opt.POS_FLOAT, default=None,
              help="Pixel scale before mean/std [default 1/255].")
@click.option("--augment/--no-augment", default=None,
              help="Random crop + flip [default: on for 32x32 RGB images].")
@click.option("--distill", type=opt.UNIT, default=0.0, show_default=True,
              help="Weight in [0, 1] of the input model's own soft labels in the loss (knowledge "
                   "distillation from the digital parent; 0 = cross-entropy only).")
@click.option("--distill-temp", type=opt.POS_FLOAT, default=4.0, show_default=True,
              help="Softmax temperature of the distillation term.")
@click.option("--bn-restat", type=opt.NONNEG_INT, default=0, show_default=True, metavar="N",
              help="After training, re-estimate the BN statistics on N clean (noise-free) training images: "
                   "training leaves those of its noisy passes, which cost the digital network accuracy "
                   "(`bn` compensation re-estimates them on the chip anyway). 0 = off.")
@click.option("--seed", type=opt.SEED, default=0, show_default=True)
@click.option("--limit", type=opt.POS_INT, default=None, help="Train on the first N images (smoke runs).")
@click.option("--eval-limit", type=opt.POS_INT, default=None,
              help="Score each epoch on the first N test images.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True,
              help="bf16 autocast for convolutions and matmuls (auto: bf16 on CPUs with AMX, where it "
                   "pays; fp32 elsewhere).")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW activations (channels-last is faster).")
@click.option("--threads", type=opt.THREADS, default=None, help="torch CPU threads [default: all cores].")
@click.option("--compute", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fine-tuned model (.onnx) [default: MODEL.hwa.onnx beside MODEL]; missing folders are "
                   "created.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint written after every epoch [default: OUTPUT.ckpt.npz; removed at the end "
                   "unless --keep-checkpoint].")
@click.option("--keep-checkpoint", is_flag=True, help="Keep the checkpoint after a finished run.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of an interrupted run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's metrics (history, accuracies) as JSON (.json).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def finetune_cmd(model: Path, target_spec: str, data: str | None, epochs: int, lr: float, batch_size: int,
                 weight_decay: float, momentum: float, schedule: str, noise: float, noise_shape: str,
                 noise_times: list[float] | None, clip: float, no_periphery: bool, dac_bits: int | None,
                 adc_bits: int | None, out_noise: float | None, out_bound: float | str | None,
                 digital: tuple[str, ...], replicate: str | None, mean: list[float] | None,
                 std: list[float] | None, scale: float | None,
                 augment: bool | None, distill: float, distill_temp: float, bn_restat: int, seed: int,
                 limit: int | None, eval_limit: int | None, precision: str, no_channels_last: bool,
                 threads: int | None, compute: str, output: Path | None, checkpoint: Path | None,
                 keep_checkpoint: bool, resume: bool, json_path: Path | None, quiet: bool) -> None:
    """Hardware-aware fine-tuning of MODEL (any ONNX classifier) for the target it will run on.

    \b
      acompile model.onnx --target pcm --eval --data cifar10 --times 1d     # how bad is it?
      acompile finetune model.onnx --target pcm --data cifar10 --epochs 5 -o model.hwa.onnx
      acompile model.hwa.onnx --target pcm --eval --data cifar10 --times 1h,1d,1y

    The output is the same graph (nodes, names, inputs, outputs) with new weights, biases and BN
    parameters and statistics; its metadata holds the recipe, the target and the parent's SHA-256.
    """
    # ---- every option and output before any work (the option types checked each value) ----------
    if not model.is_file():
        raise AcompileError(f"{str(model)!r}: file not found")
    opt.same_length(mean, std)
    if epochs == 0 and bn_restat == 0:
        raise AcompileError("--epochs must be >= 1 (0 only with --bn-restat)")
    means, stds, bound = mean, std, out_bound
    out = output or default_output(model)
    ckpt = checkpoint or out.with_name(out.name + ".ckpt.npz")
    times = None
    if noise_times is not None:
        if len(noise_times) != 2:
            raise AcompileError(f"--noise-times needs two times T_MIN,T_MAX, got {len(noise_times)}")
        if noise_shape != "device":
            raise AcompileError("--noise-times needs --noise-shape device (it drifts the devices)")
        if noise_times[0] > noise_times[1]:
            raise AcompileError(f"--noise-times must be T_MIN <= T_MAX, got {noise_times[0]:g}s and "
                                f"{noise_times[1]:g}s")
        times = (noise_times[0], noise_times[1])
    # the checkpoint is read back by --resume and rewritten: an output, never an input
    check_outputs({"-o": out, "--checkpoint": ckpt, "--json": json_path},
                  [model, *(d for d in (data or "").split(",") if d.strip().endswith(".npz"))],
                  suffixes={"-o": ONNX})
    if resume and not ckpt.is_file():
        raise AcompileError(f"--resume: no checkpoint at {str(ckpt)!r} (name it with --checkpoint)")
    if not resume and ckpt.exists():
        raise AcompileError(f"checkpoint {str(ckpt)!r} exists from an earlier run: continue it with "
                            "--resume, or remove it")
    from compiler.targets import load_target, with_overrides

    target = with_overrides(load_target(target_spec), replicate=replicate)

    from hwtrain.analog_hwa import HWAKnobs
    from hwtrain.finetune import FinetuneConfig

    knobs = HWAKnobs(noise=noise, noise_shape=noise_shape, clip=clip, periphery=not no_periphery,
                     noise_times=times)
    cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                         weight_decay=weight_decay, schedule=schedule, augment=augment, seed=seed,
                         limit=limit, eval_limit=eval_limit, precision=precision,
                         channels_last=not no_channels_last, distill=distill, distill_temp=distill_temp,
                         bn_restat=bn_restat, knobs=knobs)
    import torch

    if compute == "cuda" and not torch.cuda.is_available():
        raise AcompileError("--compute cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    overrides = {"dac_bits": dac_bits, "adc_bits": adc_bits, "out_noise": out_noise, "out_bound": bound}

    # ---- model, mapping, data --------------------------------------------------------------------
    import numpy as np

    from hwtrain.finetune import check_data, finetuned_model, prepare, train, verify_written
    from runtime.data import Dataset, load_dataset

    digital_names = [n.strip() for v in digital for n in v.split(",") if n.strip()]
    prepared = prepare(model, target, digital=digital_names, knobs=knobs, settings_overrides=overrides,
                       mean=means, std=stds, scale=scale)
    data = data or prepared.preprocessing.dataset
    if not data:
        raise AcompileError("the model's metadata names no dataset: pass --data")
    specs = [d.strip() for d in data.split(",") if d.strip()]
    parts = [load_dataset(spec, "train") for spec in specs]
    for spec, part in zip(specs, parts, strict=True):
        if len(part) == 0:
            raise AcompileError(f"data {spec!r}: the train split is empty")
        check_data(prepared.preprocessing, prepared.input_dims, part, spec)
    train_ds = parts[0] if len(parts) == 1 else Dataset(np.concatenate([p.x for p in parts]),
                                                        np.concatenate([p.y for p in parts]), data)
    test_ds = load_dataset(specs[0], "test")
    if not quiet:
        click.echo(f"finetune: {model.name} on {target['name']}: {len(prepared.layers)} analog layers, "
                   f"{sum(p.numel() for p in prepared.module.parameters())} trainable values, "
                   f"{len(train_ds) if not limit else min(limit, len(train_ds))} training images ({data})",
                   err=True)

    # ---- train, write ----------------------------------------------------------------------------
    # SIGTERM like SIGINT (acompile's main does this for every command; here too for direct callers):
    # temp files are removed, the last checkpoint stays for --resume
    with interrupt_on_sigterm():
        metrics = train(prepared, cfg, train_ds, test_ds, checkpoint=ckpt, resume=ckpt if resume else None,
                        compute=compute, progress=not quiet)
    command = " ".join(shlex.quote(a) for a in ["acompile", "finetune", *sys.argv[2:]]) \
        if len(sys.argv) > 1 and sys.argv[1] == "finetune" else None
    recipe: dict[str, Any] = {
        "tool": "acompile finetune", "parent": model.name, "target": target["name"], "data": data,
        "config": cfg.to_dict(), "precision": metrics["precision"], "history": metrics["history"],
        "digital_test_accuracy": metrics["test_accuracy"], "before": metrics["before"], "command": command}
    proto = finetuned_model(prepared, recipe)
    from compiler.artifact import serialize

    data_out = serialize(proto)
    verify_written(data_out, prepared, test_ds)  # before it replaces anything
    files: dict[Path, bytes | str] = {out: data_out}
    if json_path is not None:
        files[json_path] = json.dumps({"output": str(out), **recipe}, indent=1, default=str) + "\n"
    with interrupt_on_sigterm():
        write_files(files, primary=out)  # one set: the model moved into place last
    if not keep_checkpoint:
        ckpt.unlink(missing_ok=True)
    acc = metrics["test_accuracy"]
    click.echo(f"{out}" + (f": digital test accuracy {100 * acc:.2f} %" if acc is not None else ""))
