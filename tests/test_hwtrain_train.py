"""Training: short real-data runs learn; checkpoints resume; the CLI wires it all and reports errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compiler.cli import main
from hwtrain.noise import HWAConfig
from hwtrain.train import TrainConfig, evaluate, lr_at, train
from models import zoo
from runtime.data import Dataset, augment_crop_flip, load_dataset
from runtime.errors import AcompileError


def _mnist(split: str, n: int) -> Dataset:
    try:
        return load_dataset("mnist", split).subset(n)
    except AcompileError:
        pytest.skip("MNIST not available")


def test_mlp_hwa_learns_mnist_subset():
    torch.set_num_threads(1)
    train_ds, test_ds = _mnist("train", 6000), _mnist("test", 1000)
    if len(train_ds) < 6000:
        pytest.skip("full MNIST not available (only the bundled test subset)")
    model, pre = zoo.build("mlp"), zoo.default_preprocessing("mlp")
    before = evaluate(model, test_ds, pre)
    cfg = TrainConfig("mlp", "mnist", epochs=3, lr=0.05, batch_size=64, hwa=HWAConfig(noise=0.04, clip=2.5))
    metrics = train(model, cfg, train_ds, test_ds, pre, progress=False)  # ~280 steps
    hist = metrics["history"]
    assert hist[-1]["train_loss"] < 0.6 * hist[0]["train_loss"]
    assert metrics["test_accuracy"] > 0.85 > before["accuracy"] + 0.5
    assert not any("parametrizations" in k for k in model.state_dict())  # HWA stripped at the end


def test_resnet32_trains_a_few_steps_on_tiny_cifar_subset():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    try:
        ds = load_dataset("cifar10-exact", "train").subset(32)
    except AcompileError:
        ds = Dataset(rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32), "rand")
    model, pre = zoo.build("resnet32"), zoo.default_preprocessing("resnet32")
    cfg = TrainConfig(
        "resnet32",
        "cifar10",
        epochs=6,
        lr=0.02,
        batch_size=32,
        augment=False,
        schedule="constant",
        weight_decay=0.0,
        hwa=HWAConfig(noise=0.04, clip=2.5),
    )
    hist = train(model, cfg, ds, None, pre, progress=False)["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_augmentation_and_schedule():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    out = augment_crop_flip(x, rng)
    assert out.shape == x.shape and out.dtype == np.uint8
    cfg = TrainConfig("resnet32", "cifar10", epochs=10, lr=0.1, warmup_epochs=1)
    assert cfg.augment is True
    assert lr_at(cfg, 0, 100) == pytest.approx(0.001)
    assert lr_at(cfg, 100, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 999, 100) < 1e-3
    step = TrainConfig("mlp", "mnist", epochs=4, lr=0.1, schedule="step")
    assert [round(lr_at(step, s, 10), 6) for s in (0, 20, 30)] == [0.1, 0.01, 0.001]


def _tiny_npz(tmp_path, n: int = 256):
    """A small real-MNIST npz (or random digits if no data), so CLI runs stay fast and offline."""
    try:
        ds = load_dataset("mnist", "test").subset(n)
        x, y = ds.x, ds.y
    except AcompileError:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y.astype(np.uint8))
    return path


def test_cli_train_checkpoint_resume_export(tmp_path, capsys):
    torch.set_num_threads(1)
    data = _tiny_npz(tmp_path)
    ck, out, js = tmp_path / "ck.npz", tmp_path / "m.onnx", tmp_path / "m.json"
    main(["train", "mlp", "--dataset", str(data), "--epochs", "1", "--checkpoint", str(ck), "--seed", "3"])
    with np.load(ck, allow_pickle=False) as d:  # no pickle: loads with allow_pickle=False
        assert json.loads(str(d["meta"]))["epoch"] == 1
    main(
        [
            "train",
            "mlp",
            "--dataset",
            str(data),
            "--epochs",
            "2",
            "--resume",
            str(ck),
            "--seed",
            "3",
            "-o",
            str(out),
            "--json",
            str(js),
        ]
    )
    metrics = json.loads(js.read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    recipe = metrics["recipe"]
    assert recipe["noise"] == 0.038 and recipe["clip"] == 2.5 and recipe["epochs"] == 2
    assert recipe["command"].startswith("acompile train mlp --dataset")
    assert out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "vgg99"], "unknown model"),
        (["train", "mlp", "--dataset", "imagenet-9"], "unknown dataset"),
        (["train", "mlp", "--epochs", "0"], "--epochs"),
        (["train", "mlp", "--noise", "1.5"], "--noise"),
        (["train", "mlp", "--algorithm", "plain", "--noise", "0.04"], "plain"),
        (["train", "mlp", "--param", "states"], "KEY=VALUE"),
        (["train", "resnet32", "--dataset", "mnist"], "takes"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("acompile: error:") and message in err and "\n" not in err


def test_init_from_exported_onnx(tmp_path):
    from hwtrain.export import export_onnx
    from hwtrain.train import load_weights

    src = zoo.build("lenet5").eval()
    path = export_onnx(
        src,
        tmp_path / "l.onnx",
        example_input=zoo.example_input("lenet5"),
        preprocessing=zoo.default_preprocessing("lenet5"),
        recipe={},
    )
    dst = zoo.build("lenet5")
    load_weights(dst, path)
    assert all(
        torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True)
    )
    with pytest.raises(AcompileError, match="--init"):
        load_weights(zoo.build("mlp"), path)


def test_cli_defaults_match_physics_constants():
    from hwtrain.cli import CLIP_DEFAULT, ETA_DEFAULT
    from runtime.physics import constants as C

    assert (ETA_DEFAULT, CLIP_DEFAULT) == (C.HWA_ETA_TRAIN, C.HWA_CLIP_ALPHA)


def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ds = Dataset(rng.integers(0, 256, (96, 28, 28), dtype=np.uint8), rng.integers(0, 10, 96), "rand")
    pre = zoo.default_preprocessing("mlp")

    def cfg(epochs):
        return TrainConfig("mlp", "mnist", epochs=epochs, lr=0.05, batch_size=32, seed=5)

    torch.manual_seed(0)
    straight = zoo.build("mlp")
    train(straight, cfg(2), ds, None, pre, progress=False, checkpoint=tmp_path / "ck{epoch}.npz")
    with np.load(tmp_path / "ck1.npz", allow_pickle=False) as d:
        assert json.loads(str(d["meta"]))["epoch"] == 1
    resumed = zoo.build("mlp")  # different init: everything comes from the checkpoint
    train(resumed, cfg(2), ds, None, pre, progress=False, resume=tmp_path / "ck1.npz")
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key


def test_inmemory_algorithms_are_delegated(monkeypatch, tmp_path):
    import sys
    import types

    calls = {}

    def fake_train_inmemory(model, dataset, algorithm, device, epochs, **kw):
        calls.update(model=model, dataset=dataset, algorithm=algorithm, device=device, epochs=epochs, **kw)
        return {"test_accuracy": 0.5}

    fake = types.ModuleType("hwtrain.inmemory.run")
    fake.train_inmemory = fake_train_inmemory
    monkeypatch.setitem(sys.modules, "hwtrain.inmemory.run", fake)
    js = tmp_path / "m.json"
    main(
        [
            "train",
            "mlp",
            "--dataset",
            "mnist",
            "--algorithm",
            "ttv2",
            "--device",
            "softbounds",
            "--epochs",
            "3",
            "--offset",
            "0.2",
            "--param",
            "states=300",
            "--json",
            str(js),
        ]
    )
    assert calls["algorithm"] == "ttv2" and calls["device"] == "softbounds" and calls["epochs"] == 3
    assert calls["params"] == {"states": 300.0, "offset": 0.2}
    assert calls["json_path"] == js and calls["compute"] == "cpu" and calls["seed"] == 0


@pytest.mark.slow
def test_bundled_mlp_recipe_reaches_its_accuracy(tmp_path):
    """The bundled model's recipe end to end (~1.5 min on one core): >= 97.5 % digital on MNIST test."""
    from hwtrain.run import run_training

    torch.set_num_threads(1)
    _mnist("train", 60000)
    metrics = run_training(
        "mlp", dataset="mnist", epochs=10, noise=0.038, clip=2.5, out=str(tmp_path / "m.onnx"), progress=False
    )
    assert metrics["test_accuracy"] >= 0.975
