"""Shared fixtures: ONNX exports of models/archs.py networks (cached per session) and a CLI runner."""

from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

# A suite started in the background (`bash .ci/run &` from a script) inherits SIGINT ignored; the tests
# that send SIGINT to this process expect Python's usual KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory) -> Callable[..., Path]:
    """``onnx_export("resnet20", dynamo=False, opset=17)`` -> path of a cached ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict[tuple, Path] = {}

    def get(name: str, dynamo: bool = False, opset: int = 17, **kw) -> Path:
        key = (name, dynamo, opset, tuple(sorted(kw.items())))
        if key not in cache:
            from models.archs import ARCHS, export

            model, x = ARCHS[name]()
            tag = f"{name}_{'dyn' if dynamo else 'leg'}_{opset}" + "".join(f"_{k}{v}" for k, v in kw.items())
            cache[key] = export(model, x, root / f"{tag}.onnx", dynamo=dynamo, opset=opset, **kw)
        return cache[key]

    return get


@pytest.fixture()
def run_cli() -> Callable[..., tuple[int, str, str]]:
    """Run ``acompile ARGS`` in-process through compiler.cli.main; returns (exit code, stdout, stderr)."""
    from compiler.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code, out.getvalue(), err.getvalue()

    return run
