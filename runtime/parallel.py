"""Units of emulation work (one chip of one mapped model) on Ray: `--workers N` / `--ray ADDRESS|auto`.

Ray is an optional extra (`pip install 'acompile[ray]'`); without it the serial path works and the flags
are one-line errors. The mapped models and the data go into Ray's object store once (`RayPool.put`), the
tasks get references; each worker process keeps the emulators it built (a few, by key), so a chip costs
the same there as in the serial loop and gives the same numbers (a chip's noise depends only on
(seed, chip): runtime.evaluate.run_chip).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from runtime.errors import AcompileError

#: attempts after the first of a task whose worker dies (a system failure: the process killed, the
#: node lost). An exception raised by the task itself (bad input, a bug) is not retried: it would fail
#: the same way again, so it is reported at once.
MAX_RETRIES = 2
#: Test-only hook (tests/test_explore.py), off unless set: a path. The first unit that finds no file there
#: creates it and kills its own worker process (SIGKILL), so the test sees Ray retry a unit whose worker
#: really died. The driver passes it on to the tasks (runtime_env) only where its own environment has it.
KILL_ONCE_ENV = "ACOMPILE_TEST_KILL_ONCE"
#: emulators kept per worker process (a task of another variant evicts the oldest)
_KEEP = 4
_SESSIONS: dict[Any, Any] = {}


def ray_module():
    """`import ray`, or a one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise AcompileError("--workers / --ray need Ray, an optional extra: pip install 'acompile[ray]' "
                            "(or pip install 'ray>=2.9')") from None
    return ray


def check_parallel(workers: int | None, address: str | None) -> None:
    """The flags, before any work: at most one of them, and Ray importable."""
    if address is not None and not str(address).strip():
        raise AcompileError("--ray: give an address (host:port) or 'auto'")
    if workers is not None and address is not None:
        raise AcompileError("--workers starts a local Ray instance, --ray joins a running cluster: "
                            "give one of them")
    if workers is not None or address is not None:
        ray_module()


class RayPool:
    """A Ray instance for the duration of a `with`: a local one of `workers` CPUs, or the cluster at
    `address` ("auto": the one `ray start` started on this node). A Ray already initialized in this
    process (a test fixture, a notebook) is used as it is and left running."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers, self.address = workers, address
        self.ray = ray_module()
        self._started = False
        self._fn = None

    def __enter__(self) -> RayPool:
        ray = self.ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": "ERROR", "configure_logging": False}
            try:
                if self.address is not None:
                    ray.init(address=self.address, **kw)
                else:
                    # "local": a new instance, even where `ray start` left a cluster address behind
                    ray.init(address="local", num_cpus=self.workers, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                msg = " ".join(str(exc).split())[:300]
                raise AcompileError(f"cannot start or reach {where}: {msg}") from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()

    def put(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def run(self, tasks: list[tuple[Any, tuple]], retries: int = MAX_RETRIES
            ) -> Iterator[tuple[Any, Any, BaseException | None]]:
        """Run `run_unit(*args)` for each (key, args); yield (key, result, None) as each finishes, or
        (key, None, error) for a task that raised, or whose worker still died after `retries` more
        attempts."""
        ray = self.ray
        if self._fn is None:
            self._fn = ray.remote(num_cpus=1)(run_unit)
        opts: dict[str, Any] = {"max_retries": retries, "retry_exceptions": False}
        if os.environ.get(KILL_ONCE_ENV):
            opts["runtime_env"] = {"env_vars": {KILL_ONCE_ENV: os.environ[KILL_ONCE_ENV]}}
        fn = self._fn.options(**opts)
        pending = {fn.remote(*args): key for key, args in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key = pending.pop(ref)
                    try:
                        yield key, ray.get(ref), None
                    except ray.exceptions.RayError as exc:
                        yield key, None, exc
        finally:
            for ref in pending:  # interrupted: stop what is still queued or running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass


def run_unit(key: Any, model_bytes: bytes, data: tuple, cfg: Any, chip: int) -> dict[str, Any]:
    """One unit in a worker: chip `chip` of the mapped model `model_bytes` (its emulator built once per
    worker and `key`); the accuracies in run_chip's order, plus the worker's process id and seconds."""
    import numpy as np
    import onnx

    from runtime.evaluate import open_session, run_chip

    t0 = time.perf_counter()
    _test_kill_once()
    session = _SESSIONS.get(key)
    if session is None:
        while len(_SESSIONS) >= _KEEP:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        # the object store hands out read-only arrays; torch wants writable ones
        local = tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in data)
        session = open_session(onnx.load_from_string(model_bytes), cfg, progress=False, data=local,
                               checked=True)
        _SESSIONS[key] = session
    acc = run_chip(session, chip)
    return {"accuracies": acc, "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def _test_kill_once() -> None:
    """KILL_ONCE_ENV (tests only): the first unit to create the marker file dies with its worker."""
    marker = os.environ.get(KILL_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def ray_chip_runner(workers: int | None, address: str | None, retries: int = MAX_RETRIES):
    """`evaluate(..., chip_runner=...)` for `acompile eval --workers/--ray`: the chips as Ray tasks."""
    def run(session: Any, chips: list[int]) -> list[list[float]]:
        from runtime.evaluate import EvalData

        data = EvalData(session.x, session.y, session.xc, session.xbn,
                        session.header["calibration"]["source"], session.header["data"])
        with RayPool(workers, address) as pool:
            model_ref = pool.put(session.model.SerializeToString())
            data_ref = pool.put(data)
            key = ("eval", os.getpid(), time.time())
            out: dict[int, list[float]] = {}
            for chip, res, err in pool.run([(c, (key, model_ref, data_ref, session.cfg, c)) for c in chips],
                                           retries):
                if err is not None:
                    raise AcompileError(f"chip {chip} failed on Ray: "
                                        f"{' '.join(str(err).split())[:300]}")
                out[chip] = res["accuracies"]
        return [out[c] for c in chips]

    return run
