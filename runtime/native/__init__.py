"""Native CPU kernels for the analog tile periphery, built once with the machine's C compiler (ctypes).

Why: in eager PyTorch an emulated inference spends ~70 % of its time in element-wise passes and in
`torch.randn` (bench/RESULTS-runtime.md). `analog_kernels.c` does the DAC in one pass and the ADC tail
(output noise, ADC, rescale, bias, row-block accumulation) in another, with a counter-based Gaussian
generator. The library is compiled at first use into a per-machine cache (`$ACOMPILE_CACHE` or
~/.cache/acompile); where no compiler works, `available()` is False and the tiles use the torch path.
Threads: OpenMP inside the kernels. Loaded after torch, the library binds to the libgomp torch already
loaded (same soname), so kernels and torch's convolutions share one thread pool and its thread count
(`torch.set_num_threads`). Results do not depend on the number of threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

_SRC = Path(__file__).with_name("analog_kernels.c")
_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


def _cpu_key() -> str:
    """What makes a -march=native build valid: machine and CPU feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{flags}"


def cache_dir() -> Path:
    root = os.environ.get("ACOMPILE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "acompile")
    return Path(root) / "native"


def _compile(out: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    errors = []
    # the most capable build that the compiler accepts: native ISA and OpenMP, then less
    for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], []):
        cmd = [cc, *_FLAGS, *extra, str(_SRC), "-o", tmp, "-lm"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            os.replace(tmp, out)  # atomic: concurrent builders never load a half-written library
            return
        errors.append(r.stderr.strip().splitlines()[-1:] or [f"exit {r.returncode}"])
    os.unlink(tmp)
    raise RuntimeError(f"C compiler failed: {errors[-1][0]}")


def _declare(lib: ctypes.CDLL) -> None:
    f32p, i64, f32, u32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_uint32
    lib.acq_dac.argtypes = [f32p, f32p, i64, i64, f32, f32]
    lib.acq_normal.argtypes = [f32p, i64, i64, u32, u32]
    lib.acq_dac_slice.argtypes = [f32p, f32p, i64, i64, i64, i64, f32, f32]
    c_int = ctypes.c_int
    lib.acq_tail.argtypes = [f32p, f32p, i64, i64, i64, f32p, f32p, c_int, f32, f32, f32p, c_int, u32, u32]
    for fn in (lib.acq_dac, lib.acq_dac_slice, lib.acq_normal, lib.acq_tail):
        fn.restype = None


def load() -> ctypes.CDLL | None:
    """The kernel library (built on first use), or None with the reason in `error()`."""
    global _lib, _error
    if _lib is not None or _error is not None:
        return _lib
    with _lock:
        if _lib is None and _error is None:
            if os.environ.get("ACOMPILE_NATIVE", "1") == "0":
                _error = "disabled by ACOMPILE_NATIVE=0"
                return None
            key = hashlib.sha256(_SRC.read_bytes() + " ".join(_FLAGS).encode() + _cpu_key().encode())
            name = f"analog_kernels-{key.hexdigest()[:16]}.so"
            # the user cache, else a private temp folder (read-only home, sandboxed CI)
            uid = os.getuid() if hasattr(os, "getuid") else 0
            fallback = Path(tempfile.gettempdir()) / f"acompile-native-{uid}"
            try:
                path = cache_dir() / name
                if not path.exists():
                    try:
                        _compile(path)
                    except OSError:
                        path = fallback / name
                        if not path.exists():
                            _compile(path)
                lib = ctypes.CDLL(str(path))
                _declare(lib)
                _lib = lib
            except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
                _error = str(exc)
    return _lib


def available() -> bool:
    return load() is not None


def error() -> str | None:
    """Why the native kernels are not available (None when they are or were not tried)."""
    return _error


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when its memory is one dense block (any dim order), else a contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError("native kernels take float32 CPU tensors")


def dac(x: torch.Tensor, mult: float, lim: float) -> torch.Tensor:
    """clamp(round_half_even(x * mult), -lim, lim), same shape and memory layout as x."""
    lib = load()
    _check(x)
    x = _dense(x)
    out = torch.empty_like(x)
    lib.acq_dac(x.data_ptr(), out.data_ptr(), 0, x.numel(), mult, lim)
    return out


def dac_slices(x: torch.Tensor, channel_dim: int, slices: list[tuple[int, int]], mult: float,
               lim: float) -> list[torch.Tensor]:
    """dac() of each channel slice [c0, c1) of x, each its own dense tensor (channels-last for 4-D): the
    inputs of a layer's row blocks, without a separate slicing copy."""
    lib = load()
    _check(x)
    xv = channels_last_view(x, channel_dim)
    c = xv.shape[-1]
    positions = xv.numel() // c if c else 0
    outs = []
    for c0, c1 in slices:
        if not 0 <= c0 < c1 <= c:
            raise ValueError(f"dac_slices: bad slice [{c0}, {c1}) of {c} channels")
        o = torch.empty(*xv.shape[:-1], c1 - c0)
        lib.acq_dac_slice(xv.data_ptr(), o.data_ptr(), positions, c, c0, c1, mult, lim)
        outs.append(o.movedim(-1, channel_dim) if channel_dim != x.dim() - 1 else o)
    return outs


def normal(n: int, key: tuple[int, int]) -> torch.Tensor:
    """n standard normals of the stream `key` (the noise the tail adds to element i is element i here)."""
    lib = load()
    if n >= 1 << 32:
        raise ValueError("normal: at most 2^32 values per stream")
    z = torch.empty(n)
    lib.acq_normal(z.data_ptr(), 0, n, key[0], key[1])
    return z


def channels_last_view(y: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """y with its channel dim moved last, as a dense tensor (a view when the memory already is)."""
    v = y.movedim(channel_dim, -1) if channel_dim != y.dim() - 1 else y
    return v if v.is_contiguous() else v.contiguous()


def tail(y: torch.Tensor, out: torch.Tensor | None, scale: torch.Tensor, bias: torch.Tensor | None,
         noise_sd: float, lim: float, key: tuple[int, int], residual: torch.Tensor | None = None,
         relu: bool = False) -> torch.Tensor:
    """out (+)= clamp(round(y + noise_sd N), -lim, lim) * scale[c] (+ bias[c] when out is None), then
    + residual, then max(out, 0) when relu.

    y and out are channel-last dense tensors (`channels_last_view`), scale / bias [C] float32; lim <= 0
    means no ADC. Returns out (a new tensor when out is None)."""
    lib = load()
    _check(y)
    if not y.is_contiguous():
        raise ValueError("tail: y must be a channel-last dense tensor")
    c = y.shape[-1]
    n = y.numel()
    if n >= 1 << 32:  # the noise counter is 32-bit per Box-Muller pair
        raise ValueError("tail: at most 2^32 elements per call")
    if out is None:
        out = torch.empty_like(y)
        acc = 0
    else:
        if out.shape != y.shape or not out.is_contiguous():
            raise ValueError("tail: out must match y")
        acc = 1
    scale = scale.contiguous().float()
    bias = None if bias is None else bias.contiguous().float()
    if scale.numel() != c or (bias is not None and bias.numel() != c):
        raise ValueError(f"tail: scale / bias must have {c} entries")
    if residual is not None:
        _check(residual)
        if residual.shape != y.shape or not residual.is_contiguous():
            raise ValueError("tail: residual must be a channel-last dense tensor shaped like y")
    if n == 0:
        return out
    positions = n // c
    pb = None if (bias is None or acc) else bias.data_ptr()
    pr = None if residual is None else residual.data_ptr()
    lib.acq_tail(y.data_ptr(), out.data_ptr(), 0, positions, c, scale.data_ptr(), pb, acc, noise_sd, lim,
                 pr, int(relu), key[0], key[1])
    return out


def new_key(generator: torch.Generator | None, device: torch.device | str = "cpu") -> tuple[int, int]:
    """Two 32-bit stream keys drawn from a torch generator (reproducible per seed)."""
    k = torch.randint(0, 2**32, (2,), generator=generator, dtype=torch.int64, device=device)
    return int(k[0]), int(k[1])
