"""The retention experiment: chips x time points x compensation methods -> accuracy table.

Each simulated chip is programmed once (seeded by (seed, chip)); every time point derives its
conductances from that programmed state; each compensation method is applied on top and scored on the
same test images. The digital baseline is the reconstructed model in onnxruntime.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch

from runtime import compensation as comp
from runtime import contract
from runtime.analog_nodes import analog_factory
from runtime.analog_settings import AnalogSettings
from runtime.analog_tile import AnalogLayer
from runtime.baseline import OrtBaseline, target_of
from runtime.errors import AcompileError
from runtime.executor import Executor, load_model
from runtime.memory import keep_freed_memory
from runtime.options import (  # noqa: F401  (re-exported)
    CALIB_AUGMENT,
    METRICS,
    check_metric,
    format_time,
    parse_times,
)


def derive_seed(*parts: int) -> int:
    """Independent 63-bit seed for (seed, chip, purpose, ...): chips never share random streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def make_generator(device: torch.device, *parts: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g


@dataclass
class EvalConfig:
    """One `acompile eval` run (CLI flags, resolved)."""

    data: str = "mnist"
    times: list[float] = field(default_factory=lambda: [1.0, 3600.0, 86400.0])
    chips: int = 10
    compensation: list[str] = field(default_factory=lambda: ["none", "global", "bn"])
    compensation_given: bool = True  # False: defaults, so bn is dropped for models without BN
    seed: int = 0
    compute: str = "cpu"  # torch device the emulation runs on: cpu | cuda
    batch_size: int = 128
    limit: int | None = None
    calib: int = 1000
    calib_augment: str = "auto"  # the bn calibration images: auto | crop-flip | none (options.CALIB_AUGMENT)
    dac_calib_images: int = 256
    data_root: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    baseline: bool = True
    threads: int | None = None
    balanced: bool = False  # score = mean of per-class accuracies (classes present in the labels)
    metric: str = "accuracy"  # accuracy | agreement | rel-error (runtime.options.METRICS)


def metric_name(cfg: EvalConfig) -> str:
    """The JSON `metric` field: accuracy | balanced-accuracy | agreement | rel-error."""
    if cfg.metric == "accuracy":
        return "balanced-accuracy" if cfg.balanced else "accuracy"
    return cfg.metric


class Fidelity:
    """Accumulates one pass's outputs against the digital reference outputs, batch by batch:
    agreement = share of samples whose top-1 (argmax over the flattened output) equals the reference's;
    rel-error = ||y - y_ref||_2 / ||y_ref||_2 over every sample and element of the output."""

    def __init__(self) -> None:
        self.n = 0
        self.equal = 0
        self.diff2 = 0.0
        self.ref2 = 0.0

    def add(self, out: np.ndarray, ref: np.ndarray) -> None:
        out = np.asarray(out, np.float64).reshape(len(ref), -1)
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        self.n += len(ref)
        self.equal += int((out.argmax(1) == ref.argmax(1)).sum())
        self.diff2 += float(np.square(out - ref).sum())
        self.ref2 += float(np.square(ref).sum())

    def value(self, metric: str) -> float:
        if metric == "agreement":
            return self.equal / self.n if self.n else 0.0
        if self.ref2 == 0.0:
            return 0.0 if self.diff2 == 0.0 else float("inf")
        return float(np.sqrt(self.diff2 / self.ref2))


def score(pred: np.ndarray, y: np.ndarray, balanced: bool = False) -> float:
    """Share of correct predictions, or (balanced) the mean over the classes present in `y` of each
    class's share of correct predictions, so a test set with skewed class counts weighs classes equally."""
    pred, y = np.asarray(pred).reshape(-1), np.asarray(y).reshape(-1)
    if len(y) == 0:
        return 0.0
    correct = pred == y
    if not balanced:
        return float(correct.mean())
    classes, inverse = np.unique(y, return_inverse=True)
    per_class = np.bincount(inverse, weights=correct, minlength=len(classes)) / np.bincount(inverse)
    return float(per_class.mean())


def _model_input(model: onnx.ModelProto) -> tuple[str, list]:
    g = model.graph
    inits = {t.name for t in g.initializer}
    inp = next(i for i in g.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


def preprocessing_for(model: onnx.ModelProto, data: str, cfg: EvalConfig):
    """The model's own preprocessing (metadata), else the dataset default; CLI flags override."""
    from runtime.data import PREPROCESSING_KEY, Preprocessing, default_preprocessing

    meta = {p.key: p.value for p in model.metadata_props}
    _, dims = _model_input(model)
    if PREPROCESSING_KEY in meta:
        prep = Preprocessing.from_json(meta[PREPROCESSING_KEY])
    else:
        try:
            prep = default_preprocessing(data)
        except AcompileError:
            prep = Preprocessing()
        if len(dims) == 2:
            prep.layout = "flat"
        elif len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
            prep.input_shape = list(dims[1:])
    if cfg.mean is not None:
        prep.mean = list(cfg.mean)
    if cfg.std is not None:
        prep.std = list(cfg.std)
    if cfg.scale is not None:
        prep.scale = cfg.scale
    if len(prep.mean) != len(prep.std):
        raise AcompileError("--mean and --std need the same number of values")
    return prep


class EvalData(NamedTuple):
    """What an eval run scores and calibrates on (preprocessed model inputs)."""

    x: np.ndarray  # test inputs
    y: np.ndarray  # their labels (empty for an inputs-only .npz)
    xc: np.ndarray  # calibration images: the DAC input ranges (clean, as the chip will see them)
    xbn: np.ndarray  # the images `bn` compensation re-estimates BN statistics on
    calib_source: str
    name: str


def _prepare_data(model: onnx.ModelProto, cfg: EvalConfig) -> EvalData:
    from runtime.data import augment_crop_flip, crop_flip_applies, load_dataset

    check_metric(cfg.metric, cfg.balanced)
    if cfg.calib_augment not in CALIB_AUGMENT:
        raise AcompileError(f"--calib-augment must be one of {', '.join(CALIB_AUGMENT)}, got "
                            f"{cfg.calib_augment!r}")
    prep = preprocessing_for(model, cfg.data, cfg)
    test = load_dataset(cfg.data, "test", cfg.data_root, unlabelled=True)
    if len(test) == 0:
        raise AcompileError(f"data {cfg.data!r}: the test split has no images")
    if test.y is None and cfg.metric == "accuracy":
        raise AcompileError(f"data {cfg.data!r} has inputs 'x' but no labels 'y': accuracy needs labels; "
                            "use --metric agreement or --metric rel-error")
    if cfg.limit is not None and cfg.limit < 1:
        raise AcompileError(f"--limit must be a positive integer, got {cfg.limit}")
    test = test.subset(cfg.limit)
    x = _model_inputs(prep, test.x)
    _, dims = _model_input(model)
    pairs = zip(dims[1:], x.shape[1:], strict=False)
    if len(dims) != x.ndim or any(isinstance(d, int) and d > 0 and d != s for d, s in pairs):
        raise AcompileError(f"data '{cfg.data}' gives inputs of shape {list(x.shape[1:])} but the model "
                            f"expects {dims[1:]}")
    n_cal = max(cfg.calib, cfg.dac_calib_images)
    y = test.y if test.y is not None else np.zeros(0, np.int64)
    train = None
    if test.y is not None:  # an inputs-only .npz has no train split: calibrate on its own x
        try:
            train = load_dataset(cfg.data, "train", cfg.data_root)
        except AcompileError:
            pass
    raw = train.x[:n_cal] if train is not None and len(train) else None
    if cfg.calib_augment == "crop-flip" and (raw is None or not crop_flip_applies(raw)):
        raise AcompileError(f"--calib-augment crop-flip needs a train split of 32x32 RGB images; data "
                            f"{cfg.data!r} " + ("has none" if raw is None else f"has {list(raw.shape[1:])}"))
    if raw is None:
        source = "test (no train split found)" if test.y is not None else \
            "the .npz's x (inputs only, no train split)"
        return EvalData(x, y, x[:n_cal], x[:cfg.calib], source, test.name)
    xc = prep.apply(raw)
    if cfg.calib_augment == "none" or not crop_flip_applies(raw):
        return EvalData(x, y, xc, xc[:cfg.calib], "train", test.name)
    rng = np.random.default_rng([cfg.seed, 7])  # the same augmented images for every chip
    xbn = prep.apply(augment_crop_flip(raw[:cfg.calib], rng))
    return EvalData(x, y, xc, xbn, "train; bn: random crop (4-pixel zero padding) + flip, as in training",
                    test.name)


def _model_inputs(prep, x: np.ndarray) -> np.ndarray:
    """uint8 images through the preprocessing; float inputs (an inputs-only .npz) as they are."""
    if x.dtype == np.uint8:
        return prep.apply(x)
    return np.ascontiguousarray(x, dtype=np.float32)


class Emulator:
    """The mapped model on simulated chips: program / set_time / compensate / score."""

    def __init__(self, model: onnx.ModelProto, settings: AnalogSettings, device: str = "cpu",
                 fixed_batch: int | None = None) -> None:
        self.device = torch.device(device)
        self.settings = settings
        #: the only batch size the graph works at (mapping report `fixed_batch`); None: any
        self.fixed_batch = fixed_batch
        if self.device.type == "cpu":
            keep_freed_memory()
        factory = analog_factory(settings, self.device)
        self.executor = Executor(model, device=self.device, analog_factory=factory)
        self.layers: list[AnalogLayer] = self.executor.analog_layers
        self.bn_layers = self.executor.bn_layers
        self.refs: list[list[torch.Tensor]] | None = None

    def _set_generator(self, g: torch.Generator | None) -> None:
        for layer in self.layers:
            layer.generator = g

    def program(self, seed: int, chip: int, calib_x: np.ndarray, batch_size: int) -> None:
        """Program a new chip, calibrate the DAC input (and, if asked, ADC output) ranges, store GDC
        references (t = 0)."""
        g = make_generator(self.device, seed, chip, 0)
        for layer in self.layers:
            layer.program(g)
        for layer in self.layers:
            layer.start_calibration()
        self._set_generator(make_generator(self.device, seed, chip, 3))
        try:
            self.forward_all(calib_x, batch_size)
        finally:
            for layer in self.layers:
                layer.finish_calibration()
        if [layer.start_out_calibration() for layer in self.layers].count(True):
            try:  # ADC ranges, once the DAC ranges (which scale the outputs) are fixed
                self.forward_all(calib_x, batch_size)
            finally:
                for layer in self.layers:
                    layer.finish_out_calibration()
        self.set_time(0.0, seed, chip, -1)
        self.refs = comp.reference_reads(self.layers)

    def set_time(self, t: float, seed: int, chip: int, ti: int) -> None:
        g = make_generator(self.device, seed, chip, 1, ti + 1)
        for layer in self.layers:
            layer.set_time(t, g)

    def compensate(self, method: str, calib_x: np.ndarray, batch_size: int, gen: torch.Generator) -> None:
        def run() -> None:
            self._set_generator(gen)
            self.forward_all(calib_x, batch_size)

        comp.apply(method, self.layers, self.bn_layers, self.refs, run)

    def run(self, xb: np.ndarray) -> torch.Tensor:
        """The model's output for one batch; a model with a fixed batch gets a short batch padded with
        copies of its last image (their outputs dropped)."""
        n, fb = len(xb), self.fixed_batch
        if fb and n > fb:
            return torch.cat([self.run(xb[i:i + fb]) for i in range(0, n, fb)])
        if fb and n < fb:
            xb = np.concatenate([xb, np.repeat(xb[-1:], fb - n, axis=0)])
        out = self.executor(torch.from_numpy(xb).to(self.device))
        return out[:n] if fb and n < fb else out

    def forward_all(self, x: np.ndarray, batch_size: int) -> None:
        for i in range(0, len(x), batch_size):
            self.run(x[i:i + batch_size])

    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int, gen: torch.Generator | None = None,
                 bar=None, balanced: bool = False) -> float:
        """Share of correct images, or with `balanced` the mean of per-class accuracies (see `score`)."""
        self._set_generator(gen)
        preds = []
        for i in range(0, len(x), batch_size):
            out = self.run(x[i:i + batch_size])
            preds.append(out.reshape(out.shape[0], -1).argmax(1).cpu().numpy())
            if bar is not None:
                bar.update(1)
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        return score(pred, y, balanced)

    def fidelity(self, x: np.ndarray, ref: np.ndarray, metric: str, batch_size: int,
                 gen: torch.Generator | None = None, bar=None) -> float:
        """`metric` (agreement | rel-error) of this chip's outputs against the digital ones `ref`."""
        self._set_generator(gen)
        acc = Fidelity()
        for i in range(0, len(x), batch_size):
            out = self.run(x[i:i + batch_size])
            acc.add(out.detach().cpu().numpy(), ref[i:i + batch_size])
            if bar is not None:
                bar.update(1)
        return acc.value(metric)


@dataclass
class Session:
    """A mapped model ready to emulate chips: its emulator, data and the compensation methods to run.

    `evaluate` runs every chip of one; `acompile explore` (runtime/explore.py) runs single chips of one
    (a unit of work, possibly in another process), with the same numbers: a chip's noise depends only
    on (seed, chip), never on which chips ran before it in the same process."""

    model: onnx.ModelProto
    cfg: EvalConfig
    emu: Emulator
    methods: list[str]
    x: np.ndarray
    y: np.ndarray
    xc: np.ndarray
    xbn: np.ndarray
    batch_size: int
    header: dict[str, Any]
    #: the digital model's outputs on `x` (agreement / rel-error only; None for accuracy)
    ref: np.ndarray | None = None


def prepare_data(model: onnx.ModelProto, cfg: EvalConfig) -> EvalData:
    """The test and calibration images of an eval run (preprocessed)."""
    return _prepare_data(model, cfg)


def open_session(mapped: onnx.ModelProto | str | Path, cfg: EvalConfig, progress: bool = True,
                 data: EvalData | None = None,
                 checked: bool = False) -> Session:
    """Check the mapped model and the config, load the data (or take `data`, from `prepare_data`), build
    the emulator. `checked`: the caller ran `contract.check_mapped` on this model already."""
    import sys

    model = load_model(mapped)
    if not checked:  # the whole artifact against the contract (format, metadata, analog nodes, blocks)
        contract.check_mapped(model, "model" if isinstance(mapped, onnx.ModelProto) else repr(str(mapped)))
    target = target_of(model)
    settings = AnalogSettings.from_target(target, **cfg.overrides)
    if cfg.compute.startswith("cuda") and not torch.cuda.is_available():
        raise AcompileError("--compute cuda: no CUDA device is available")
    if cfg.chips < 1 or cfg.batch_size < 1:
        raise AcompileError("--chips and --batch-size must be >= 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    x, y, xc, xbn, calib_source, data_name = data if data is not None else _prepare_data(model, cfg)
    fixed_batch = _fixed_batch(model)
    batch_size = cfg.batch_size
    if fixed_batch is not None and fixed_batch != batch_size:
        batch_size = fixed_batch
        if progress:
            print(f"acompile: note: the model works only at batch size {fixed_batch} (fixed at export): "
                  f"evaluating in batches of {fixed_batch}, not {cfg.batch_size}", file=sys.stderr)
    emu = Emulator(model, settings, cfg.compute, fixed_batch)
    requested = cfg.compensation
    if not cfg.compensation_given and not emu.bn_layers:
        requested = [m for m in requested if m != "bn"]
        if progress:
            print("acompile: note: model has no BatchNormalization nodes; 'bn' compensation left out",
                  file=sys.stderr)
    methods = comp.check_methods(requested, len(emu.bn_layers))
    if not emu.layers:
        raise AcompileError("the model has no analog (ai.acompile) nodes: compile it with --target first")
    header: dict[str, Any] = {
        "schema": "acompile.retention/1",
        "model": str(mapped) if not isinstance(mapped, onnx.ModelProto) else model.graph.name,
        "target": target.get("name"), "data": data_name, "n_images": int(len(x)),
        "chips": cfg.chips, "seed": cfg.seed, "compute": cfg.compute, "times": cfg.times,
        "metric": metric_name(cfg),
        "compensation": methods,
        "calibration": {"images": int(len(xbn)), "source": calib_source},
        "settings": _settings_dict(settings),
        "kernels": emu.layers[0].kernels_used(),
    }
    ref = None
    if cfg.metric != "accuracy":
        ref = reference_outputs(model, x, cfg.batch_size, cfg.threads)
    return Session(model, cfg, emu, methods, x, y, xc, xbn, batch_size, header, ref)


def reference_outputs(model: onnx.ModelProto, x: np.ndarray, batch_size: int,
                      threads: int | None = None) -> np.ndarray:
    """The digital model's outputs on `x` (onnxruntime on the rebuilt model, batch by batch): the
    reference agreement and rel-error compare every chip, time and compensation against."""
    ort = OrtBaseline(model, threads)
    outs = [np.asarray(ort(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def run_chip(s: Session, chip: int, bar=None) -> list[float]:
    """Program chip `chip` and score it at every time point and compensation method: the accuracies (or
    `cfg.metric`'s values against the digital outputs `s.ref`) in the order (time, method), time-major.
    Depends only on (cfg.seed, chip) and the session."""
    cfg, emu, batch_size = s.cfg, s.emu, s.batch_size
    calib_bn = s.xbn
    calib_dac = s.xc[: cfg.dac_calib_images]
    out: list[float] = []
    if bar is not None:
        bar.set_postfix_str(f"programming chip {chip + 1}/{cfg.chips}")
    emu.program(cfg.seed, chip, calib_dac, batch_size)
    try:
        for ti, t in enumerate(cfg.times):
            emu.set_time(t, cfg.seed, chip, ti)
            for ci, m in enumerate(s.methods):
                if bar is not None:
                    bar.set_postfix_str(f"chip {chip + 1}/{cfg.chips} t={format_time(t)} {m}")
                gen = make_generator(emu.device, cfg.seed, chip, 2, ti, ci)
                emu.compensate(m, calib_bn, batch_size, gen)
                if s.ref is not None:
                    out.append(emu.fidelity(s.x, s.ref, cfg.metric, batch_size, gen, bar))
                else:
                    out.append(emu.accuracy(s.x, s.y, batch_size, gen, bar, cfg.balanced))
            comp.reset(emu.layers, emu.bn_layers)
    finally:
        comp.reset(emu.layers, emu.bn_layers)
    return out


def summary_rows(times: list[float], methods: list[str], per_chip: list[list[float]]) -> list[dict[str, Any]]:
    """The `results` rows of the retention JSON from each chip's `run_chip` list (chips in order)."""
    rows = []
    for ti, t in enumerate(times):
        for ci, m in enumerate(methods):
            a = np.asarray([chip[ti * len(methods) + ci] for chip in per_chip])
            tv = int(t) if float(t).is_integer() else t
            rows.append({"t": tv, "time": format_time(t), "compensation": m, "mean": float(a.mean()),
                         "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a)),
                         "accuracies": [float(v) for v in a]})
    return rows


def baseline_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, batch_size: int,
                      threads: int | None = None, balanced: bool = False) -> float:
    """The digital baseline: the standard ONNX model rebuilt from the mapped one, run by onnxruntime."""
    ort = OrtBaseline(model, threads)
    preds = np.concatenate([ort(x[i:i + batch_size]).reshape(len(x[i:i + batch_size]), -1)
                            .argmax(1) for i in range(0, len(x), batch_size)])
    return score(preds, y, balanced)


def evaluate(mapped: onnx.ModelProto | str | Path, cfg: EvalConfig, progress: bool = True,
             chip_runner=None) -> dict[str, Any]:
    """Run the retention experiment; returns the results dict written as JSON.

    `chip_runner(session, chips) -> list of run_chip lists` runs the chips elsewhere (Ray:
    runtime/parallel.py); the default runs them here, one after the other."""
    from runtime.progress import Progress

    t_start = time.perf_counter()
    s = open_session(mapped, cfg, progress)
    result = dict(s.header)
    if cfg.baseline and cfg.metric != "accuracy":  # the reference itself: trivially 1.0 / 0.0
        result["baseline"] = {"engine": "onnxruntime", "value": 1.0 if cfg.metric == "agreement" else 0.0,
                              "trivial": True}
    elif cfg.baseline:
        t0 = time.perf_counter()
        result["baseline"] = {"engine": "onnxruntime",
                              "accuracy": baseline_accuracy(s.model, s.x, s.y, cfg.batch_size, cfg.threads,
                                                            cfg.balanced),
                              "seconds": time.perf_counter() - t0}
    if chip_runner is not None:
        per_chip = chip_runner(s, list(range(cfg.chips)))
    else:
        n_batches = -(-len(s.x) // s.batch_size)
        total = cfg.chips * len(cfg.times) * len(s.methods) * n_batches
        with Progress(total=total, desc="eval", unit="batches", enabled=progress) as bar:
            per_chip = [run_chip(s, chip, bar) for chip in range(cfg.chips)]
    result["results"] = summary_rows(cfg.times, s.methods, per_chip)
    result["seconds"] = time.perf_counter() - t_start
    return result


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the compiler found the graph fixed to (mapping report `fixed_batch`), or None."""
    from runtime import contract

    text = contract.read_metadata(model).get(contract.META_MAPPING)
    try:
        value = json.loads(text).get("fixed_batch") if text else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _settings_dict(s: AnalogSettings) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(s)
    d["device"] = {"model": s.device.name, **s.device.params}  # the device's parameters, not its repr
    return json.loads(json.dumps(d, default=str))
