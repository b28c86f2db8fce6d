"""`acompile explore`: the grid, the results file, --resume after an interruption, Ray == serial.

A tiny grid (LeNet-5, adc_bits=4,8, 2 chips, 200 images, 1d and 1y, none and global) so the file stays
well under 90 s; Ray starts once (module fixture)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.cli import main
from models import model_path

LENET = str(model_path("lenet5-mnist.onnx"))
GRID = ["--set", "adc_bits=4,8", "--times", "1d,1y", "--chips", "2", "--limit", "200"]
KW = dict(sets=["adc_bits=4,8"], times=[86400.0, 365 * 86400.0], chips=2, limit=200, quiet=True)
ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def _units(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The uninterrupted serial run, in process: (summary, printed table, out dir)."""
    from runtime.explore_cli import run_explore

    out = tmp_path_factory.mktemp("serial")
    summary = run_explore(Path(LENET), out_dir=out, **KW)
    from runtime.explore import table
    return summary, table(summary), out


def test_serial_run_writes_table_rows_and_summary(serial, tmp_path, capsys):
    summary, text, out = serial
    assert "adc_bits" in text and "1y global" in text and "digital baseline" in text
    rows = _units(out / "results.jsonl")
    assert len(rows) == 2 * 2 * 2 * 2  # variant x time x compensation x chip
    assert {(r["variant"], r["chip"]) for r in rows} == {(f"adc_bits={b}", c) for b in (4, 8) for c in (0, 1)}
    assert (out / "summary.csv").read_text().splitlines()[0] == "adc_bits,time,t,compensation,mean,std,n"
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert [v["knobs"] for v in summary["variants"]] == [{"adc_bits": 4}, {"adc_bits": 8}]
    # the CLI prints the same table
    code, stdout, _ = _cli(["explore", LENET, *GRID, "--out", str(tmp_path / "cli"), "-q"], capsys)
    assert code == 0 and text in stdout


def test_a_variant_gives_the_numbers_of_acompile_eval(serial):
    """Per-unit evaluation reproduces the serial `acompile eval` of that variant bit for bit."""
    import copy

    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime.evaluate import EvalConfig, evaluate

    target = copy.deepcopy(load_target("pcm"))
    target["periphery"]["adc_bits"] = 4
    mapped, _ = map_model(LENET, target)
    cfg = EvalConfig(times=KW["times"], chips=2, compensation=["none", "global"], limit=200, baseline=False)
    result = evaluate(mapped, cfg, progress=False)
    got = serial[0]["variants"][0]["results"]
    assert [r["accuracies"] for r in result["results"]] == [r["accuracies"] for r in got]


def test_interrupted_run_resumes_to_the_same_table(serial, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compiler.cli", "explore", LENET, *GRID, "--out", str(out), "-q"]
    env = {**os.environ, "ACOMPILE_TEST_UNIT_PAUSE": "1.5", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 1 + 2 * 4:  # two units
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    before = results.read_bytes()
    done = {(r["variant"], r["chip"]) for r in _units(results)}
    assert 2 <= len(done) < 4  # finished units are on disk, the run did not complete
    with open(results, "ab") as f:  # what a hard kill inside a write leaves: a cut line
        f.write(b'{"variant": "adc_bits=8", "chip": 1, "time": "1d", "compen')
    res = subprocess.run([*cmd[:-1], "--resume"], env={**env, "ACOMPILE_TEST_UNIT_PAUSE": ""}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert serial[1] in res.stdout  # the table of the uninterrupted run
    after = results.read_bytes()
    assert after.startswith(before)  # finished units kept as written (never recomputed), cut line gone
    rows = _units(results)
    units = [(r["variant"], r["chip"]) for r in rows]
    assert len(units) == 16 and len(set(units)) == 4
    # a finished run resumed again runs nothing
    again = subprocess.run([*cmd[:-1], "--resume"], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and results.read_bytes() == after


@pytest.mark.parametrize("args, message", [
    (["--set", "adc=4,8"], "--set adc: unknown target key (closest: adc_bits"),
    (["--set", "adc_bits=1"], "--set adc_bits=1: [periphery].adc_bits must be"),
    (["--set", "adc_bits"], "use KEY=V1,V2"),
    (["--set", "tile=12"], "--tile must look like ROWSxCOLS"),
    (["--set", "device=pcm,foo"], "unknown device model 'foo'"),
    (["--set", "device=pcm,rram", "--set", "t0=10"], "device model 'rram' has no key 't0'"),
    (["--set", "drift=maybe"], "[device].drift must be true or false"),
    (["--set", "mapping.rows=4"], "no key 'rows' in [mapping]"),
    (["--set", "adc_bits=4", "--times", "1x"], "--times: cannot read"),
    (["--set", "adc_bits=4", "--compensation", "bn"], "no BatchNormalization"),
    (["--set", "adc_bits=4", "--workers", "2", "--ray", "auto"], "give one of them"),
    ([], "at least one --set"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    out = tmp_path / "o"
    code, stdout, err = _cli(["explore", LENET, *args, "--out", str(out)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_used_out_dir_needs_resume(serial, capsys):
    code, _, err = _cli(["explore", LENET, *GRID, "--out", str(serial[2])], capsys)
    assert code == 2 and "add --resume" in err


# ---- Ray ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    for attempt in range(3):  # on a loaded machine the GCS can miss ray.init's connect timeout
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            break
        except ray.exceptions.RaySystemError:
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)
    yield ray
    ray.shutdown()


def test_ray_equals_serial_bit_for_bit(serial, ray_local, tmp_path):
    from runtime.evaluate import EvalConfig, evaluate
    from runtime.explore_cli import run_explore
    from runtime.parallel import ray_chip_runner

    summary = run_explore(Path(LENET), out_dir=tmp_path / "ray", workers=2, **KW)
    assert summary["variants"] == serial[0]["variants"]
    pids = {r["pid"] for r in _units(tmp_path / "ray" / "results.jsonl")}
    assert pids and os.getpid() not in pids  # the units ran in Ray's workers
    # `acompile eval --workers`: the chips as Ray tasks, the same numbers
    from compiler.pipeline import map_model
    from compiler.targets import load_target

    mapped, _ = map_model(LENET, load_target("pcm"))
    cfg = EvalConfig(times=KW["times"], chips=2, compensation=["none", "global"], limit=200, baseline=False)
    a = evaluate(mapped, cfg, progress=False)
    b = evaluate(mapped, cfg, progress=False, chip_runner=ray_chip_runner(2, None))
    assert a["results"] == b["results"] == serial[0]["variants"][1]["results"]


def test_a_failing_task_is_reported_not_retried(ray_local, tmp_path):
    """An exception in the task (bad input) fails the same way again: reported at once, run once."""
    from runtime.evaluate import EvalConfig
    from runtime.parallel import RayPool, run_unit

    with RayPool(2) as pool:  # the running instance
        ref = pool.put(b"not an onnx model")
        (key, res, err), = list(pool.run([("u", (("bad",), ref, (), EvalConfig(), 0))], retries=2))
        assert key == "u" and res is None and isinstance(err, ray_local.exceptions.RayTaskError)
        # the same policy, counted: a task that raises runs once, although 2 retries are allowed
        log = tmp_path / "attempts"

        def counting(*args):
            with open(log, "a") as f:
                f.write("x")
            return run_unit(*args)

        pool._fn = ray_local.remote(num_cpus=1)(counting)
        (_, res, err), = list(pool.run([("u", (("bad2",), ref, (), EvalConfig(), 0))], retries=2))
    assert res is None and err is not None and log.read_text() == "x"


def test_a_killed_worker_is_retried(serial, ray_local, tmp_path, monkeypatch):
    """A Ray worker process SIGKILLed in the middle of a unit (the test hook ACOMPILE_TEST_KILL_ONCE): Ray
    runs the unit again in a new worker and the run gives the serial numbers, value for value."""
    from runtime.explore_cli import run_explore
    from runtime.parallel import KILL_ONCE_ENV

    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    summary = run_explore(Path(LENET), out_dir=tmp_path / "ray", workers=2, **KW)
    assert marker.exists()  # a worker did die in a unit
    assert summary["variants"] == serial[0]["variants"]
    units = [(r["variant"], r["chip"]) for r in _units(tmp_path / "ray" / "results.jsonl")]
    assert len(units) == 16 and len(set(units)) == 4  # every unit once, the killed one included
    # the control: without retries the same death is reported as a dead worker
    from runtime.evaluate import EvalConfig
    from runtime.parallel import RayPool

    marker.unlink()
    with RayPool(2) as pool:
        ref = pool.put(b"never read: the worker dies first")
        (_, res, err), = list(pool.run([("u", (("k",), ref, (), EvalConfig(), 0))], retries=0))
    assert res is None and isinstance(err, ray_local.exceptions.WorkerCrashedError) and marker.exists()


def test_without_ray_the_flags_are_one_line_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for args in (["explore", LENET, "--set", "adc_bits=4", "--out", str(tmp_path / "o"), "--workers", "2"],
                 ["eval", LENET, "--ray", "auto"]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and "pip install 'acompile[ray]'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_ray_cluster_address(serial, tmp_path):
    """`ray start --head` (a cluster of one node) and `acompile explore --ray ADDRESS`: the serial numbers."""
    import secrets
    import shutil
    import socket

    pytest.importorskip("ray")
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(ray_cli).exists():
        pytest.skip("no `ray` command")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ray >= 2.59 starts local clusters with token authentication: head and client share a token
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "head.log"
    with open(log, "wb") as f:
        head = subprocess.Popen([ray_cli, "start", "--head", "--num-cpus=2", f"--port={port}",
                                 "--include-dashboard=false", "--disable-usage-stats", "--block"],
                                env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while b"Ray runtime started" not in log.read_bytes():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        res = subprocess.run([sys.executable, "-m", "compiler.cli", "explore", LENET, *GRID, "--out",
                              str(tmp_path / "c"), "-q", "--ray", f"127.0.0.1:{port}"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert serial[1] in res.stdout
        summary = json.loads((tmp_path / "c" / "summary.json").read_text())
        assert summary["variants"] == serial[0]["variants"]
    finally:
        head.terminate()  # `ray start --block` stops its node on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
