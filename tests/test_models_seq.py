"""The zoo's sequence / attention / generative networks (lstm, transformer, autoencoder): they build and
export (onnxruntime == torch), HWA weight noise reaches nn.LSTM / nn.MultiheadAttention /
nn.ConvTranspose2d weights in training mode only, strip_hwa restores plain modules, a tiny CLI training
run lowers the loss, and the bundled models reach their cards' numbers on models/data/mnist-test-1k.npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from compiler.cli import main
from hwtrain.export import export_bytes, read_metadata
from hwtrain.noise import HWAConfig, apply_hwa, clean_state_dict, clip_weights_, hwa_weights, strip_hwa
from hwtrain.train import evaluate, evaluate_reconstruction, load_weights
from models import zoo
from runtime.data import PREPROCESSING_KEY, Dataset, Preprocessing, load_dataset
from runtime.errors import AcompileError

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
MNIST_1K = MODELS / "data" / "mnist-test-1k.npz"
NAMES = ("lstm", "transformer", "autoencoder")

# Digital numbers of the bundled files on the first 1000 MNIST test images (models/data/mnist-test-1k.npz),
# as stated in their cards: accuracy for the classifiers; for the autoencoders the relative L2 error
# (pixel space) and the bundled LeNet-5's accuracy on the reconstructions.
EXPECTED_1K = {
    "lstm-mnist-plain": {"accuracy": 0.985},
    "lstm-mnist-hwa": {"accuracy": 0.989},
    "transformer-mnist-plain": {"accuracy": 0.984},
    "transformer-mnist-hwa": {"accuracy": 0.983},
    "autoencoder-mnist-plain": {"rel_l2": 0.14326, "lenet5": 0.988},
    "autoencoder-mnist-hwa": {"rel_l2": 0.14939, "lenet5": 0.99},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_build_export_and_onnxruntime_equals_torch(name):
    torch.manual_seed(0)
    model = zoo.build(name).eval()
    pre = zoo.default_preprocessing(name)
    assert pre.layout == "NCHW" and pre.input_shape == [1, 28, 28] and zoo.default_dataset(name) == "mnist"
    out_name = "reconstruction" if zoo.task(name) == "reconstruct" else "logits"
    data = export_bytes(model, example_input=_x(2), preprocessing=pre, recipe={"model": name},
                        output_name=out_name)
    proto = onnx.load_from_string(data)
    ops = {n.op_type for n in proto.graph.node}
    assert {"lstm": "LSTM", "transformer": "Softmax", "autoencoder": "ConvTranspose"}[name] in ops
    assert proto.graph.output[0].name == out_name
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = _x(5, seed=1)
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ((5, 10) if name != "autoencoder" else (5, 1, 28, 28))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_zoo_tasks_and_architecture():
    assert [zoo.task(n) for n in NAMES] == ["classify", "classify", "reconstruct"]
    assert zoo.task("lenet5") == "classify"
    lstm = zoo.build("lstm")
    assert (lstm.lstm.input_size, lstm.lstm.hidden_size, lstm.lstm.batch_first) == (28, 128, True)
    vit = zoo.build("transformer")
    assert len(vit.encoder.layers) == 2 and vit.pos.shape == (1, 16, 64)
    attn = vit.encoder.layers[0].self_attn
    assert (attn.embed_dim, attn.num_heads) == (64, 4)
    ae = zoo.build("autoencoder")
    assert isinstance(ae.dec1, nn.ConvTranspose2d) and ae.dec1.output_padding == (1, 1)
    # the reconstruction lives in the normalized MNIST space: sigmoid range mapped by (p - mean) / std
    with torch.no_grad():
        out = ae.eval()(_x())
    pre = zoo.default_preprocessing("autoencoder")
    lo, hi = (0 - pre.mean[0]) / pre.std[0], (1 - pre.mean[0]) / pre.std[0]
    assert float(out.min()) >= lo - 1e-6 and float(out.max()) <= hi + 1e-6
    with pytest.raises(AcompileError):
        zoo.task("vgg99")


def _noisy_names(model: nn.Module) -> set[str]:
    return {f"{n}.{w}" if n else w for n, m, names in hwa_weights(model) for w in names
            if parametrize.is_parametrized(m, w)}


@pytest.mark.parametrize("name, expect", [
    ("lstm", {"lstm.weight_ih_l0", "lstm.weight_hh_l0", "fc.weight"}),
    ("transformer", {"patch.weight", "fc.weight"} | {
        f"encoder.layers.{i}.{w}" for i in (0, 1)
        for w in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight")
    }),
    ("autoencoder", {"enc1.weight", "enc2.weight", "fc_enc.weight", "fc_dec.weight", "dec1.weight",
                     "dec2.weight"}),
])
def test_hwa_noise_in_train_mode_only_and_strip_restores(name, expect):
    torch.manual_seed(0)
    model = zoo.build(name)
    types = {n: type(m) for n, m in model.named_modules()}
    params = {n: p for n, p in model.named_parameters()}
    keys = sorted(model.state_dict())
    x = _x()
    ref = model.eval()(x).detach()
    apply_hwa(model, HWAConfig(noise=0.05, clip=0.0))
    assert _noisy_names(model) == expect
    model.train()
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # fresh noise every forward
    for n, m, names in hwa_weights(model):
        for w in names:
            clean = getattr(m.parametrizations, w).original
            assert not torch.equal(getattr(m, w), clean), f"{n}.{w} not perturbed in train mode"
    a.sum().backward()  # the gradient reaches the clean parameters
    assert all(p.grad is not None for n, p in params.items() if n.endswith("weight_ih_l0") or "in_proj" in n)
    model.eval()
    assert torch.equal(model(x), ref) and torch.equal(model(x), ref)  # eval: the digital model
    for _, m, names in hwa_weights(model):
        for w in names:
            assert torch.equal(getattr(m, w), getattr(m.parametrizations, w).original)
    assert sorted(clean_state_dict(model)) == keys
    strip_hwa(model)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert {n: p for n, p in model.named_parameters()}.keys() == params.keys()
    assert all(p is params[n] for n, p in model.named_parameters())  # optimizers stay valid
    assert sorted(model.state_dict()) == keys
    if name == "lstm":  # the LSTM's cached weight list is the clean Parameters again
        assert all(w is params[f"lstm.{wn}"] for w, wn in zip(model.lstm._flat_weights,
                                                               model.lstm._flat_weights_names, strict=True))
        assert not model.lstm._forward_pre_hooks
    model.train()
    assert torch.equal(model(x), model(x))  # plain again: no noise in train mode either


def test_all_lstm_weights_get_noise_and_clipping():
    lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
    model = nn.Sequential()
    model.add_module("rnn", lstm)
    apply_hwa(model, HWAConfig(noise=0.05, clip=2.0))
    names = [w for _, _, ws in hwa_weights(model) for w in ws]
    assert sorted(names) == sorted(f"weight_{k}_l{i}{s}" for k in ("ih", "hh") for i in (0, 1)
                                   for s in ("", "_reverse"))
    assert all(parametrize.is_parametrized(lstm, w) for w in names)
    with torch.no_grad():
        for w in names:
            getattr(lstm.parametrizations, w).original[0].mul_(10)
    bounds = {w: 2.0 * float(getattr(lstm.parametrizations, w).original.detach().std()) for w in names}
    clip_weights_(model, 2.0)
    for w in names:
        top = float(getattr(lstm.parametrizations, w).original.detach().abs().max())
        assert top == pytest.approx(bounds[w], rel=1e-6)  # clipped to 2 std (of the weights before)
    x = torch.randn(2, 5, 6)
    lstm.train()
    assert not torch.equal(lstm(x)[0], lstm(x)[0])
    strip_hwa(model)
    assert type(lstm) is nn.LSTM and torch.equal(lstm(x)[0], lstm(x)[0])


def test_checkpoint_round_trip_with_noisy_lstm_and_attention(tmp_path):
    from hwtrain.train import TrainConfig, load_checkpoint, make_optimizer, save_checkpoint

    for name in ("lstm", "transformer"):
        torch.manual_seed(0)
        model = apply_hwa(zoo.build(name), HWAConfig())
        opt = make_optimizer(model, TrainConfig(model=name, dataset="mnist"))
        model.train()
        nn.functional.cross_entropy(model(_x(4)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        path = save_checkpoint(tmp_path / f"{name}.npz", model, opt, {"epoch": 1})
        plain_name = "lstm.weight_hh_l0" if name == "lstm" else "encoder.layers.0.self_attn.in_proj_weight"
        with np.load(path, allow_pickle=False) as d:  # plain names, as for Conv/Linear
            assert f"model/{plain_name}" in d.files and f"momentum/{plain_name}" in d.files
        torch.manual_seed(1)
        other = apply_hwa(zoo.build(name), HWAConfig())
        opt2 = make_optimizer(other, TrainConfig(model=name, dataset="mnist"))
        load_checkpoint(path, other, opt2)
        want, got = clean_state_dict(model), clean_state_dict(other)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        assert len(opt2.state) == len(opt.state)


def test_mha_and_convtranspose_clipping_and_periphery_scope():
    model = zoo.build("transformer")
    cfg = HWAConfig(noise=0.05, clip=2.5, adc_bits=8)
    apply_hwa(model, cfg)
    attn = model.encoder.layers[0].self_attn
    assert not hasattr(attn, "_hwa_hooks")  # periphery: Conv2d / Linear only
    assert hasattr(model.encoder.layers[0].linear1, "_hwa_hooks")
    w = attn.parametrizations.in_proj_weight.original
    with torch.no_grad():
        w[0].mul_(100)
    bound = 2.5 * float(w.detach().std())
    clip_weights_(model, 2.5)
    assert float(w.detach().abs().max()) == pytest.approx(bound, rel=1e-6)
    strip_hwa(model)
    assert not hasattr(model.encoder.layers[0].linear1, "_hwa_hooks")
    ae = zoo.build("autoencoder")
    apply_hwa(ae, HWAConfig(noise=0.05, clip=2.5))
    w = ae.dec1.parametrizations.weight.original
    with torch.no_grad():
        w[0].mul_(100)
    bound = 2.5 * float(w.detach().std())
    clip_weights_(ae, 2.5)
    assert float(w.detach().abs().max()) == pytest.approx(bound, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_cli_tiny_hwa_training_lowers_the_loss(name, tmp_path):
    try:
        train_ds = load_dataset("mnist", "train").subset(384)
        test_ds = load_dataset("mnist", "test").subset(200)
    except AcompileError:
        pytest.skip("MNIST not available")
    pre = zoo.default_preprocessing(name)
    torch.manual_seed(0)  # run_training's initial weights
    fresh = zoo.build(name)
    ev = evaluate_reconstruction if zoo.task(name) == "reconstruct" else evaluate
    before_train, before_test = ev(fresh, train_ds, pre)["loss"], ev(fresh, test_ds, pre)["loss"]
    out, js = tmp_path / f"{name}.onnx", tmp_path / f"{name}.json"
    main(["train", name, "--algorithm", "hwa", "--epochs", "1", "--limit", "384", "--eval-limit", "200",
          "--batch-size", "32", "-o", str(out), "--json", str(js)])
    metrics = json.loads(js.read_text())
    recipe = json.loads(read_metadata(out)["acompile.recipe"])
    assert recipe["model"] == name and recipe["algorithm"] == "hwa" and recipe["noise"] == 0.038
    hist = metrics["history"][0]
    assert hist["test_loss"] < before_test
    model = zoo.build(name)
    load_weights(model, out)
    assert ev(model.eval(), train_ds, pre)["loss"] < before_train
    if name == "autoencoder":
        assert recipe["task"] == "reconstruct" and 0 < recipe["digital_test_rel_l2"] < 1
        assert 0 <= recipe["lenet5_accuracy_on_reconstructions"] <= 1
        assert recipe["lenet5_accuracy_on_originals"] > 0.95
    else:
        assert 0 < recipe["digital_test_accuracy"] <= 1


def _mnist_1k() -> Dataset:
    with np.load(MNIST_1K, allow_pickle=False) as d:
        return Dataset(name="mnist-test-1k", x=d["x"], y=d["y"])


@pytest.mark.parametrize("stem", sorted(EXPECTED_1K))
def test_bundled_model_reaches_its_card(stem):
    path = MODELS / f"{stem}.onnx"
    assert path.stat().st_size < 2_000_000
    assert (MODELS / f"{stem}.md").exists() and f"`{stem}.onnx`" in (MODELS / "README.md").read_text()
    meta = read_metadata(path)
    pre = Preprocessing.from_json(meta[PREPROCESSING_KEY])
    recipe = json.loads(meta["acompile.recipe"])
    name, algorithm = stem.split("-")[0], stem.split("-")[-1]
    assert recipe["model"] == name and recipe["algorithm"] == algorithm and recipe["seed"] == 0
    assert recipe["noise"] == (0.038 if algorithm == "hwa" else 0.0)
    assert f"-o models/{stem}.onnx" in recipe["command"]
    ds = _mnist_1k()
    x = pre.apply(ds.x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    model = zoo.build(name)
    load_weights(model, path)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)  # the file is the zoo model
    want = EXPECTED_1K[stem]
    if name != "autoencoder":
        assert recipe["digital_test_accuracy"] >= 0.97
        acc = float((got.argmax(1) == ds.y).mean())
        assert acc == pytest.approx(want["accuracy"], abs=1e-9)
        return
    px, rx = ds.x.astype(np.float64) / 255, got[:, 0] * pre.std[0] + pre.mean[0]
    rel = float(np.linalg.norm(rx - px) / np.linalg.norm(px))
    assert rel == pytest.approx(want["rel_l2"], abs=5e-4)
    lenet = ort.InferenceSession(str(MODELS / "lenet5-mnist.onnx"), providers=["CPUExecutionProvider"])
    lpre = Preprocessing.from_json(read_metadata(MODELS / "lenet5-mnist.onnx")[PREPROCESSING_KEY])
    assert (lpre.mean, lpre.std) == (pre.mean, pre.std)  # the reconstruction is LeNet's input as is
    pred = lenet.run(None, {"input": got.astype(np.float32)})[0].argmax(1)
    assert float((pred == ds.y).mean()) == pytest.approx(want["lenet5"], abs=1e-9)
