"""Checkpoints in a safe format: arrays in ``.npz`` (allow_pickle=False) + metadata in ``.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from runtime.errors import AcompileError
from runtime.outputs import write_files


def _meta_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def exists(path: Path) -> bool:
    return Path(path).exists() and _meta_path(path).exists()


def save(path: Path, net, gen: torch.Generator, meta: dict) -> None:
    """Every layer's device state, biases and the RNG state; written all or nothing (tmp + rename)."""
    arrays: dict[str, np.ndarray] = {"rng_state": gen.get_state().cpu().numpy()}
    for name, layer in (("fc1", net.fc1), ("fc2", net.fc2)):
        for key, value in layer.rule.state_dict().items():
            arrays[f"{name}.rule.{key}"] = value.detach().cpu().numpy()
        arrays[f"{name}.bias"] = layer.bias.detach().cpu().numpy()
    path = Path(path)
    # the arrays and their metadata as one set (runtime.outputs): never a new .npz beside an old .json
    write_files({path: lambda f: np.savez(f, **arrays), _meta_path(path): json.dumps(meta, indent=2)},
                primary=path)


def load(path: Path, net, gen: torch.Generator, expect: dict) -> dict:
    """Restore state saved by save(); refuses a checkpoint of a different run configuration."""
    meta = json.loads(_meta_path(path).read_text())
    for key, value in expect.items():
        if meta.get(key) != value:
            raise AcompileError(f"checkpoint {path}: was made with {key}={meta.get(key)!r}, "
                                f"this run has {key}={value!r}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: torch.from_numpy(data[k].copy()) for k in data.files}
    gen.set_state(arrays["rng_state"].to(torch.uint8))
    for name, layer in (("fc1", net.fc1), ("fc2", net.fc2)):
        prefix = f"{name}.rule."
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        layer.rule.load_state_dict(state)
        with torch.no_grad():
            layer.bias.copy_(arrays[f"{name}.bias"])
    return meta
