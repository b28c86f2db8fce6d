"""`acompile eval --balanced`: every accuracy is the mean of per-class accuracies (classes in the labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import DATA_DIR, model_path
from runtime.evaluate import score

MLP = model_path("mlp-mnist.onnx")
MNIST_1K = DATA_DIR / "mnist-test-1k.npz"


def test_score_plain_and_balanced_by_hand():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3])
    pred = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2])
    assert score(pred, y) == pytest.approx(9 / 11)
    # class 0: 8/8, class 1: 1/2, class 3: 0/1; class 2 (only predicted) does not count
    assert score(pred, y, balanced=True) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert score(np.zeros(0), np.zeros(0), balanced=True) == 0.0


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """A skewed MNIST subset on which plain and class-balanced accuracy differ a lot, and the numpy
    reference of both from onnxruntime's predictions on the same images."""
    import onnxruntime as ort

    from runtime.data import PREPROCESSING_KEY, Preprocessing

    with np.load(MNIST_1K) as d:
        x, y = d["x"], d["y"].astype(np.int64)
    keep = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 7)[:40], np.flatnonzero(y == 9)[:6]])
    xs, ys = x[keep], y[keep].copy()
    ys[-6:] = 5  # six nines labelled 5: class 5 is (almost) always wrong, but holds only 6 images
    tmp = tmp_path_factory.mktemp("balanced")
    npz = tmp / "skewed.npz"
    np.savez(npz, x=xs, y=ys.astype(np.uint8))

    meta = {p.key: p.value for p in onnx.load(str(MLP)).metadata_props}
    prep = Preprocessing.from_json(meta[PREPROCESSING_KEY])
    sess = ort.InferenceSession(str(MLP), providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: prep.apply(xs)})[0].argmax(1)
    plain = float((pred == ys).mean())
    balanced = float(np.mean([(pred[ys == c] == c).mean() for c in np.unique(ys)]))
    assert balanced < plain - 0.15  # the subset really separates the two metrics
    return npz, tmp, plain, balanced


def _eval(run_cli, mapped: Path, npz: Path, json_path: Path, *extra: str) -> dict:
    code, out, err = run_cli("eval", mapped, "--data", npz, "--chips", "2", "--times", "0,1d",
                             "--compensation", "none", "--threads", "1", "--quiet", "--json", json_path,
                             *extra)
    assert code == 0, err
    return json.loads(json_path.read_text()) | {"_table": out}


def test_eval_balanced_matches_numpy(run_cli, skewed):
    npz, tmp, plain, balanced = skewed
    mapped = tmp / "mlp.ideal.onnx"
    code, _, err = run_cli(MLP, "--target", "ideal", "-o", mapped)
    assert code == 0, err

    res = _eval(run_cli, mapped, npz, tmp / "b.json", "--balanced")
    assert res["metric"] == "balanced-accuracy"
    assert res["baseline"]["accuracy"] == pytest.approx(balanced, abs=1e-12)
    # target ideal: every chip at every time point scores what onnxruntime scores
    for row in res["results"]:
        assert row["accuracies"] == pytest.approx([balanced] * 2, abs=1e-12)
    assert "class-balanced accuracy" in res["_table"]

    res = _eval(run_cli, mapped, npz, tmp / "p.json")
    assert res["metric"] == "accuracy"
    assert res["baseline"]["accuracy"] == pytest.approx(plain, abs=1e-12)
    for row in res["results"]:
        assert row["accuracies"] == pytest.approx([plain] * 2, abs=1e-12)
    assert "class-balanced" not in res["_table"]
