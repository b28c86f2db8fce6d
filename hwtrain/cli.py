"""`acompile train`: hardware-aware / plain training of a zoo model, or in-memory training (delegated).

Imports only click and the torch-free option / output modules at module level; every option and output
path is checked before torch and the training code load.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hwtrain.inmemory.params import training_devices
from runtime import options as opt
from runtime.errors import AcompileError
from runtime.outputs import ONNX, check_outputs
from runtime.physics.devices import noisy_device_names

HWA_ALGORITHMS = ("hwa", "plain")
INMEMORY_ALGORITHMS = ("mixed-precision", "sgd", "ttv2", "cttv2", "agad", "fp32")
# Shown in --help only; hwtrain.run resolves the defaults from runtime.physics.constants. Kept literal so
# that --help needs no torch (tests/test_hwtrain_train.py checks that they agree).
ETA_DEFAULT = 0.038  # runtime.physics.constants.HWA_ETA_TRAIN (Joshi 2020)
CLIP_DEFAULT = 2.5  # runtime.physics.constants.HWA_CLIP_ALPHA


def _parse_params(items: tuple[str, ...], offset: float | None) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AcompileError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise AcompileError(f"--param {key}: value must be a number, got {value!r}") from None
    if offset is not None:
        params["offset"] = offset
    return params


def _check_files(algorithm: str, out: str | None, json_path: str | None, checkpoint: str | None,
                 resume: str | None, init: str | None, data_root: str | None) -> None:
    """Inputs readable, outputs writable and distinct, before any training."""
    for flag, path in (("--init", init), ("--resume", resume)):
        if path is not None and not Path(path).is_file():
            raise AcompileError(f"{flag} {path!r}: file not found")
    if init is not None and Path(init).suffix.lower() not in (".onnx", ".npz"):
        raise AcompileError(f"--init {init!r}: expected trained weights as .onnx or a checkpoint .npz")
    outputs: dict[str, str | Path | None] = {"-o": out, "--json": json_path}
    inputs: list[str | None] = [init, data_root]
    if algorithm in INMEMORY_ALGORITHMS:
        # the in-memory checkpoint (.npz + .json beside it) is --resume, else OUT with .ckpt.npz
        ckpt = Path(resume) if resume else (Path(out).with_suffix(".ckpt.npz") if out else None)
        if ckpt is not None:
            outputs["the checkpoint"] = ckpt
            outputs["the checkpoint's .json"] = ckpt.with_suffix(".json")
    else:
        ckpt = Path(checkpoint.replace("{epoch}", "1")) if checkpoint is not None else None
        outputs["--checkpoint"] = ckpt
        # continuing a checkpoint in place (--resume X --checkpoint X) rewrites it by design
        if resume and not (ckpt is not None and Path(resume).resolve() == ckpt.resolve()):
            inputs.append(resume)
    check_outputs(outputs, inputs, suffixes={"-o": ONNX})


@click.command("train")
@click.argument("model_name", metavar="MODEL")
@click.option(
    "--dataset", "dataset", default=None, help="mnist, fashion-mnist, cifar10, ... (default: the model's)"
)
@click.option(
    "--algorithm",
    type=click.Choice(HWA_ALGORITHMS + INMEMORY_ALGORITHMS),
    default="hwa",
    show_default=True,
    help="hwa / plain (noise 0, clip off) train in torch; the rest train in memory",
)
@click.option(
    "--epochs", type=opt.POS_INT, default=None,
    help="default: 10 for mlp/lenet5, 20 for lstm/transformer/autoencoder, 200 for resnet32"
)
@click.option(
    "--noise",
    type=opt.FRACTION,
    default=None,
    help=f"HWA weight noise eta (x max|W|, in [0, 1))  [default: {ETA_DEFAULT}]",
)
@click.option(
    "--noise-shape",
    type=click.Choice(["gaussian", *noisy_device_names()]),
    default="gaussian",
    show_default=True,
    help="a device name: the std follows that device's programming-noise curve",
)
@click.option(
    "--clip",
    type=opt.NONNEG_FLOAT,
    default=None,
    help=f"clip weights to k*std(W) after each step, 0 = off  [default: {CLIP_DEFAULT}]",
)
@click.option(
    "--dac-bits",
    type=opt.BITS,
    default=0,
    show_default=True,
    help="straight-through input quantization (0 = off, or 2..16)",
)
@click.option(
    "--adc-bits",
    type=opt.BITS,
    default=0,
    show_default=True,
    help="straight-through output quantization (0 = off, or 2..16)",
)
@click.option("--lr", type=opt.POS_FLOAT, default=None, help="peak learning rate (default per model)")
@click.option("--batch-size", type=opt.POS_INT, default=None, help="default per model")
@click.option("--weight-decay", type=opt.NONNEG_FLOAT, default=None, help="default per model")
@click.option(
    "--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True
)
@click.option("--seed", type=opt.SEED, default=0, show_default=True)
@click.option("--data", "data_root", type=click.Path(), default=None, help="data folder or .npz")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="write the ONNX (.onnx) here; missing folders are created",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="write metrics JSON (.json)"
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="save .npz after every epoch ({epoch} in the name: one file each)",
)
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="continue from a checkpoint")
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    default=None,
    help="start from trained weights (.onnx or checkpoint)",
)
@click.option(
    "--limit", type=opt.POS_INT, default=None, help="train on the first N images only (smoke tests)"
)
@click.option(
    "--eval-limit", type=opt.POS_INT, default=None, help="evaluate on the first N test images only"
)
@click.option("--compute", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option(
    "--device",
    "device_model",
    type=click.Choice(training_devices()),
    default="pcm",
    show_default=True,
    help="device for in-memory algorithms: RPU step devices (sgd, Tiki-Taka family) or any registered "
    "device (mixed precision: pcm by SET pulses, the others by program-and-verify writes)",
)
@click.option(
    "--offset", type=opt.NONNEG_FLOAT, default=None, help="reference offset spread (in-memory, Tiki-Taka)"
)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="in-memory algorithm parameter")
def train_cmd(
    model_name: str,
    dataset: str | None,
    algorithm: str,
    epochs: int | None,
    noise: float | None,
    noise_shape: str,
    clip: float | None,
    dac_bits: int,
    adc_bits: int,
    lr: float | None,
    batch_size: int | None,
    weight_decay: float | None,
    schedule: str,
    seed: int,
    data_root: str | None,
    out: str | None,
    json_path: str | None,
    checkpoint: str | None,
    resume: str | None,
    limit: int | None,
    init: str | None,
    eval_limit: int | None,
    compute: str,
    device_model: str,
    offset: float | None,
    params: tuple[str, ...],
) -> None:
    """Train MODEL (mlp, lenet5, resnet20/32, lstm, transformer, autoencoder) hardware-aware and export it
    to ONNX with its recipe. The autoencoder trains with MSE against its input; the others with cross-entropy.

    \b
      acompile train mlp --dataset mnist --epochs 10 -o models/mlp-mnist.onnx
      acompile train resnet32 --dataset cifar10 --noise 0.04 --clip 2.5 --epochs 200 --compute cuda \\
          -o models/resnet32-cifar10-hwa.onnx
      acompile train mlp --dataset mnist --algorithm mixed-precision --device pcm --epochs 20
      acompile train charlstm --algorithm mixed-precision --device rram --epochs 6
    """
    parsed = _parse_params(params, offset)
    _check_files(algorithm, out, json_path, checkpoint, resume, init, data_root)
    if algorithm in INMEMORY_ALGORITHMS:
        from hwtrain.inmemory.params import NETS, check_algorithm, check_net_outputs, resolve

        resolve(parsed)  # names and ranges of --param, before torch loads
        check_algorithm(algorithm, device_model)
        check_net_outputs(model_name, out, resume)
        from hwtrain.inmemory.run import train_inmemory

        if dataset is None:
            if model_name in NETS:
                dataset = NETS[model_name]
            else:
                from models.zoo import default_dataset

                dataset = default_dataset(model_name)
        metrics = train_inmemory(
            model_name,
            dataset,
            algorithm,
            device_model,
            epochs if epochs is not None else 10,
            params=parsed,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            out=Path(out) if out else None,
            json_path=Path(json_path) if json_path else None,
            resume=Path(resume) if resume else None,
            compute=compute,
        )
        if metrics and not json_path:
            click.echo(json.dumps(metrics, indent=1, default=str))
        return
    if parsed:
        raise AcompileError(
            "--param/--offset apply to in-memory algorithms only, not to --algorithm " + algorithm
        )
    from hwtrain.run import run_training

    run_training(
        model_name,
        dataset=dataset,
        algorithm=algorithm,
        epochs=epochs,
        noise=noise,
        noise_shape=noise_shape,
        clip=clip,
        dac_bits=dac_bits,
        adc_bits=adc_bits,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        schedule=schedule,
        seed=seed,
        data_root=data_root,
        out=out,
        json_path=json_path,
        checkpoint=checkpoint,
        resume=resume,
        limit=limit,
        init=init,
        eval_limit=eval_limit,
        compute=compute,
    )

