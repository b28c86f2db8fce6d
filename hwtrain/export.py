"""Export a trained torch model to ONNX that acompile can compile and evaluate without extra flags.

The graph keeps BatchNormalization as nodes (the runtime's BN-based drift compensation re-estimates
their statistics), the batch dimension is dynamic, and the metadata carries how inputs are preprocessed
(`acompile.preprocessing`) and how the model was trained (`acompile.recipe`). Every export is checked
against the torch model with onnxruntime, so a silently wrong file never leaves this function.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from runtime import contract
from runtime.data import PREPROCESSING_KEY, Preprocessing
from runtime.errors import AcompileError
from runtime.outputs import write_files

RECIPE_KEY = contract.META_RECIPE
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4
RTOL = 1e-5


def _plain_eval_copy(model: nn.Module) -> nn.Module:
    from hwtrain.noise import strip_hwa

    plain = copy.deepcopy(model).cpu()
    strip_hwa(plain)
    return plain.eval()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_input: torch.Tensor,
    preprocessing: Preprocessing,
    recipe: dict,
    opset: int = 17,
) -> Path:
    """Write `model` (eval mode, HWA hooks stripped, clean weights) to `path`; return the path.

    The file is written all or nothing (runtime.outputs.write_files): an interrupted or failed export
    leaves an existing file at `path` as it was. See `export_bytes`.
    """
    path = Path(path)
    data = export_bytes(model, example_input=example_input, preprocessing=preprocessing, recipe=recipe,
                        opset=opset)
    write_files({path: data})
    return path


def export_bytes(
    model: nn.Module,
    *,
    example_input: torch.Tensor,
    preprocessing: Preprocessing,
    recipe: dict,
    opset: int = 17,
    output_name: str = OUTPUT_NAME,
) -> bytes:
    """The ONNX file of `model` as bytes, checked against the torch model with onnxruntime.
    The output is `logits` (`output_name`: "reconstruction" for the zoo's autoencoder).

    Uses the TorchScript exporter with TrainingMode.PRESERVE and no constant folding: the eval-mode
    peephole of the exporter would otherwise fold BN into the preceding Conv.
    """
    plain = _plain_eval_copy(model)
    x = example_input.detach().cpu().float()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            plain,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(proto.graph)
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[PREPROCESSING_KEY] = preprocessing.to_json()
    meta[RECIPE_KEY] = json.dumps(recipe, sort_keys=True, default=str)
    contract.set_metadata(proto, meta)
    proto.producer_name = contract.PRODUCER_HWTRAIN
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    verify_onnx(plain, data, x)
    return data


def _inline_identity_initializers(graph: onnx.GraphProto) -> None:
    """The exporter de-duplicates equal tensors (e.g. untrained BN scales) into Identity nodes over one
    initializer; give each consumer its own initializer instead, so the graph holds only real ops."""
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(inits[node.input[0]])
            copy_.name = node.output[0]
            graph.initializer.append(copy_)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def verify_onnx(model: nn.Module, path: str | os.PathLike | bytes, x: torch.Tensor,
                tol: float = TOLERANCE) -> float:
    """Check onnxruntime against torch on x and on a batch of another size (the dynamic batch dim):
    |ort - torch| <= tol + RTOL |torch| elementwise; returns the worst excess over the relative part.
    `path` may be the file's bytes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                providers=["CPUExecutionProvider"])
    if isinstance(path, bytes):
        path = "model"
    worst = 0.0
    for batch in (x, torch.cat([x, x[:1]], 0)):
        with torch.no_grad():
            ref = model(batch).numpy()
        got = sess.run(None, {INPUT_NAME: batch.numpy().astype(np.float32)})[0]
        if got.shape != ref.shape:
            raise AcompileError(f"exported {path}: output shape {got.shape} != torch {ref.shape}")
        # allclose semantics: absolute 1e-4 plus 1e-5 of the value (fp32 reassociation on large logits)
        worst = max(worst, float((np.abs(got - ref) - RTOL * np.abs(ref)).max()))
    if worst > tol:
        raise AcompileError(
            f"exported {path} differs from the torch model by {worst:.2e} (> {tol:.0e} + {RTOL:.0e} relative)"
        )
    return worst


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict (preprocessing and recipe are JSON strings)."""
    return contract.read_metadata(onnx.load(str(path), load_external_data=False))
