"""Numbers for a generator of MNIST digits, from the bundled LeNet-5 (models/lenet5-mnist.onnx, 99.18 %)
run with onnxruntime: mean max-softmax confidence, class spread (entropy in bits of the predicted-class
histogram; log2(10) = 3.32 = all classes equally often) and the Frechet distance between Gaussians
fitted to LeNet's penultimate features (fc2 after ReLU, 84-d) of generated and real digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.data import MNIST_MEAN, MNIST_STD

LENET = Path(__file__).resolve().parents[2] / "models" / "lenet5-mnist.onnx"
FEATURES = "/relu_3/Relu_output_0"  # the input of the last Gemm (fc3)


class LeNetJudge:
    def __init__(self, path: Path = LENET) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(path))
        model.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def run(self, images01: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images in [0, 1], [N, 784] or [N, 28, 28] -> (logits [N, 10], features [N, 84])."""
        x = ((images01.reshape(-1, 1, 28, 28) - MNIST_MEAN[0]) / MNIST_STD[0]).astype(np.float32)
        logits, feats = [], []
        for i in range(0, len(x), 1000):
            lo, fe = self.sess.run(["logits", FEATURES], {"input": x[i:i + 1000]})
            logits.append(lo)
            feats.append(fe)
        return np.concatenate(logits), np.concatenate(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ev, vec = np.linalg.eigh(ca)
    sa = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(sa @ cb @ sa), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)


def scores(judge: LeNetJudge, fake01: np.ndarray, real_features: np.ndarray) -> dict:
    logits, feats = judge.run(fake01)
    z = logits - logits.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    hist = np.bincount(prob.argmax(1), minlength=10) / len(prob)
    nz = hist[hist > 0]
    return {"lenet_confidence": float(prob.max(1).mean()),
            "class_entropy_bits": float(-(nz * np.log2(nz)).sum()),
            "class_histogram": [round(float(h), 4) for h in hist],
            "frechet_lenet": frechet_distance(feats, real_features)}


def write_grid(images01: np.ndarray, path: Path, cols: int = 8) -> None:
    """The first cols*cols images as one PNG grid (2-pixel gaps)."""
    from PIL import Image

    imgs = images01[: cols * cols].reshape(-1, 28, 28)
    rows = int(np.ceil(len(imgs) / cols))
    grid = np.zeros((rows * 30, cols * 30), np.uint8)
    for k, im in enumerate(imgs):
        r, c = divmod(k, cols)
        tile = np.clip(im * 255 + 0.5, 0, 255).astype(np.uint8)
        grid[r * 30 + 1:r * 30 + 29, c * 30 + 1:c * 30 + 29] = tile
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((cols * 60, rows * 60), Image.NEAREST).save(path)
