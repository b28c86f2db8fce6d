"""Never lose a user's file; validate every option like the target validator does (CONTRACTS §2).

* Bad options and output paths of every command: exit code 2, exactly one `acompile: error:` line on
  stderr, no traceback, no input file changed, no output written, and (for option errors) no torch
  imported: the check runs before any work.
* The writer (runtime.outputs.write_files): an I/O error rolls back to the old files; signals are
  deferred during the renames.
* Real `acompile` processes interrupted by SIGTERM / SIGINT inside the write window (the test hook
  ACOMPILE_TEST_WRITE_PAUSE widens it): the output set is all old or all new, no temp file stays.
  The random-timing sweep is `@pytest.mark.slow` (run with `-m slow`); the rest takes ~30 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime import options as opt
from runtime.errors import AcompileError
from runtime.outputs import PAUSE_ENV, check_outputs, deferred_interrupts, write_files

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MNIST_1K = MODELS / "data" / "mnist-test-1k.npz"
UNWRITABLE = Path("/sys")  # not writable even for root


def _unwritable_ok() -> bool:
    from runtime.outputs import _writable

    return UNWRITABLE.is_dir() and not _writable(UNWRITABLE)


# ---- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """m.onnx (the bundled MLP), its compiled set m.pcm.{onnx,json,md,png}, data files, odd inputs."""
    from compiler.cli import main

    d = tmp_path_factory.mktemp("reliability")
    shutil.copy(MODELS / "mlp-mnist.onnx", d / "m.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        main([str(d / "m.onnx"), "-q"])
    with np.load(MNIST_1K) as z:
        np.savez(d / "data.npz", x=z["x"][:20], y=z["y"][:20])
    np.savez(d / "empty.npz", x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64))
    (d / "text.onnx").write_text("not a model\n")
    (d / "rc").mkdir()
    shutil.copy(MODELS / "mlp-mnist.onnx", d / "rc" / "m.md")  # a model under a report's name
    (d / "afile").write_text("a file, not a folder\n")
    return d


@pytest.fixture()
def work(base: Path, tmp_path: Path) -> Path:
    w = tmp_path / "w"
    shutil.copytree(base, w)
    return w


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below folder (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temps(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


# ---- bad options and paths: one line, exit 2, nothing touched -----------------------------------------
M, SRC = "{d}/m.pcm.onnx", "{d}/m.onnx"
D = ("--data", "{d}/data.npz")
CASES: dict[str, tuple[list[str], str]] = {
    # outputs over inputs / over each other
    "eval --json onto the mapped model": (["eval", M, "--json", M], "overwrite the input"),
    "eval --csv onto the mapped model": (["eval", M, "--csv", M], "overwrite the input"),
    "eval --plot onto the mapped model": (["eval", M, "--plot", M], "overwrite the input"),
    "compile --eval --json onto the source": ([SRC, "--eval", "--json", SRC], "overwrite the input"),
    "compile report .md onto the input": (["{d}/rc/m.md", "-o", "{d}/rc/m.onnx"], "overwrite the input"),
    "compile -o onto the input": ([SRC, "-o", SRC], "overwrite the input"),
    "--json onto compile's own report": ([SRC, "-o", "{d}/o.onnx", "--eval", "--json", "{d}/o.json"],
                                         "same file"),
    "--json and --csv the same file": (["eval", M, "--json", "{d}/x.json", "--csv", "{d}/x.json"],
                                       "same file"),
    "hard link to the input": (["eval", M, "--json", "{d}/link.json"], "overwrite the input"),
    # suffixes
    "--plot .onnx": (["eval", M, "--plot", "{d}/x.onnx"], ".png"),
    "compile -o .txt": ([SRC, "-o", "{d}/x.txt"], ".onnx"),
    "report -o of another format": (["report", M, "--format", "json", "-o", "{d}/r.md"], ".json"),
    "sweep --json .png": (["sweep", "mlp", "--param", "states=10", "--json", "{d}/s.png"], ".json"),
    "train -o .txt": (["train", "mlp", "-o", "{d}/t.txt"], ".onnx"),
    # folders
    "--json into a file's 'folder'": (["eval", M, "--json", "{d}/afile/x.json"], "not a folder"),
    "--json is a folder": (["eval", M, "--json", "{d}/rc"], "rc"),
    # numbers
    "--chips 0": (["eval", M, "--chips", "0"], "--chips"),
    "--chips 1e9": (["eval", M, "--chips", "1000000000"], "--chips"),
    "--chips abc": (["eval", M, "--chips", "abc"], "--chips"),
    "--batch-size 0": (["eval", M, "--batch-size", "0"], "--batch-size"),
    "--limit -5": (["eval", M, "--limit", "-5"], "--limit"),
    "--limit 0": (["eval", M, "--limit", "0"], "--limit"),
    "--adc-bits -1": (["eval", M, "--adc-bits", "-1"], "--adc-bits"),
    "--adc-bits 1": (["eval", M, "--adc-bits", "1"], "--adc-bits"),
    "--dac-bits 99": (["eval", M, "--dac-bits", "99"], "--dac-bits"),
    "--out-noise -1": (["eval", M, "--out-noise", "-1"], "--out-noise"),
    "--out-noise nan": (["eval", M, "--out-noise", "nan"], "--out-noise"),
    "--out-bound 0": (["eval", M, "--out-bound", "0"], "--out-bound"),
    "--input-range 0": (["eval", M, "--input-range", "0"], "--input-range"),
    "--input-range inf": (["eval", M, "--input-range", "inf"], "--input-range"),
    "--times ''": (["eval", M, "--times", ""], "--times"),
    "--times ,": (["eval", M, "--times", " , "], "--times"),
    "--times -1s": (["eval", M, "--times", "1s,-1s"], "--times"),
    "--calib 0 with bn": (["eval", M, "--calib", "0", "--compensation", "bn"], "--calib"),
    "--compensation tpu": (["eval", M, "--compensation", "none,gdc"], "--compensation"),
    "--seed -1": (["eval", M, "--seed", "-1"], "--seed"),
    "--threads -1": (["eval", M, "--threads", "-1"], "--threads"),
    "--std 0": (["eval", M, "--std", "0"], "--std"),
    "--mean nan": (["eval", M, "--mean", "nan"], "--mean"),
    "--mean/--std lengths": (["eval", M, "--mean", "0.1,0.2", "--std", "1"], "same number"),
    "--scale 0": (["eval", M, "--scale", "0"], "--scale"),
    "--compute tpu": (["eval", M, "--compute", "tpu"], "--compute"),
    "unknown option": (["eval", M, "--chipz", "3"], "--chipz"),
    "compile --tile 0x256": ([SRC, "--tile", "0x256"], "--tile"),
    "compile --eval --chips 0": ([SRC, "--eval", "--chips", "0"], "--chips"),
    "train --epochs 0": (["train", "mlp", "--epochs", "0"], "--epochs"),
    "train --batch-size 0": (["train", "mlp", "--batch-size", "0"], "--batch-size"),
    "train --lr 0": (["train", "mlp", "--lr", "0"], "--lr"),
    "train --noise 1.5": (["train", "mlp", "--noise", "1.5"], "--noise"),
    "train --dac-bits 1": (["train", "mlp", "--dac-bits", "1"], "--dac-bits"),
    "train --seed -1": (["train", "mlp", "--seed", "-1"], "--seed"),
    "train --limit 0": (["train", "mlp", "--limit", "0"], "--limit"),
    "train --init missing": (["train", "mlp", "--init", "{d}/nope.onnx"], "--init"),
    "train --init .txt": (["train", "mlp", "--init", "{d}/afile"], "--init"),
    "train --param limit=inf": (["train", "mlp", "--algorithm", "sgd", "--param", "limit=inf"], "limit"),
    "sweep --compute tpu": (["sweep", "mlp", "--param", "states=10", "--compute", "tpu"], "--compute"),
    "sweep --epochs 0": (["sweep", "mlp", "--param", "states=10", "--epochs", "0"], "--epochs"),
    "sweep --param states=1": (["sweep", "mlp", "--param", "states=100,1"], "states"),
    "sweep --param nan": (["sweep", "mlp", "--param", "states=nan"], "states"),
    "finetune --threads 0": (["finetune", SRC, *D, "--threads", "0"], "--threads"),
    "finetune --momentum 1": (["finetune", SRC, *D, "--momentum", "1"], "--momentum"),
    "finetune --noise-times 0,1d": (["finetune", SRC, *D, "--noise-times", "0,1d"], "--noise-times"),
    "finetune --noise-times 1y,1s": (["finetune", SRC, *D, "--noise-times", "1y,1s"], "--noise-times"),
    "finetune --json onto -o": (["finetune", SRC, *D, "-o", "{d}/f.onnx", "--json", "{d}/f.onnx"],
                                "same file"),
}
#: cases that must fail only after loading data or a model (torch is then allowed to be loaded)
LATE = {
    "eval empty .npz": (["eval", M, "--data", "{d}/empty.npz", "-q"], "no images"),
    "train --init text.onnx": (["train", "mlp", "--init", "{d}/text.onnx", "--dataset", "{d}/data.npz",
                                "--epochs", "1"], "--init"),
}


def _args(template: list[str], d: Path) -> list[str]:
    return [a.format(d=d) for a in template]


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("acompile: error: "), err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", [*CASES, *LATE])
def test_bad_option_or_path_is_one_line_and_touches_nothing(case, work, run_cli):
    template, needle = CASES.get(case) or LATE[case]
    os.link(work / "m.pcm.onnx", work / "link.json")
    before = snapshot(work)
    code, _, err = run_cli(*_args(template, work))
    _one_line_error(code, err, needle)
    assert snapshot(work) == before  # no input changed, no output written (no temp file either)


@pytest.mark.skipif(not _unwritable_ok(), reason="no unwritable folder to test with")
@pytest.mark.parametrize("args", [
    ["eval", M, "--json", f"{UNWRITABLE}/acompile-test/r.json"],
    ["eval", M, "--plot", f"{UNWRITABLE}/r.png"],
    [SRC, "-o", f"{UNWRITABLE}/m.onnx"],
    ["train", "mlp", "-o", f"{UNWRITABLE}/t.onnx"],
    ["sweep", "mlp", "--param", "states=10", "--json", f"{UNWRITABLE}/s.json"],
    ["finetune", SRC, *D, "-o", f"{UNWRITABLE}/f.onnx"],
])
def test_unwritable_folder_is_refused_before_any_work(args, work, run_cli):
    before = snapshot(work)
    code, _, err = run_cli(*_args(args, work))
    _one_line_error(code, err, "not writable")
    assert snapshot(work) == before


def test_option_errors_come_before_torch(work):
    """Argument errors are fast: no torch (and for eval no numpy) is imported before they are found."""
    cases = [["eval", M, "--chips", "0"], ["eval", M, "--json", M], ["eval", M, "--times", ""],
             ["train", "mlp", "--epochs", "0"], ["train", "mlp", "-o", "{d}/t.txt"],
             ["train", "gan", "--algorithm", "mixed-precision", "--device", "pcm", "-o", "{d}/g.onnx"],
             ["train", "mlp", "--algorithm", "sgd", "--device", "rram"],
             ["sweep", "mlp", "--param", "states=10", "--compute", "tpu"],
             ["finetune", SRC, *D, "--threads", "0"], [SRC, "--eval", "--chips", "0"]]
    code = ("import sys, json\nfrom compiler.cli import main\nout = []\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        out.append(e.code)\n"
            "print(json.dumps([out, 'torch' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([_args(c, work) for c in cases])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    codes, torch_loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases), proc.stderr
    assert not torch_loaded
    assert len(proc.stderr.strip().splitlines()) == len(cases), proc.stderr


def test_help_texts_and_short_quiet(run_cli):
    code, out, _ = run_cli("eval", "-h")
    assert code == 0
    assert "-q, --quiet" in out
    options = out[out.index("Options:"):]
    for flag, words in (("--json", "JSON"), ("--csv", "CSV"), ("--plot", ".svg")):
        at = options.index(f"  {flag} ")
        assert words in options[at:at + 200], options[at:at + 200]
    code, out, _ = run_cli("finetune", "-h")
    assert code == 0 and "-q, --quiet" in out


def test_compensation_names_match_the_runtime():
    from runtime.compensation import METHODS

    assert opt.COMPENSATIONS == METHODS


def test_eval_creates_missing_folders(work, run_cli):
    """The documented behaviour of every command: missing output folders are created."""
    out = work / "new" / "deeper"
    code, stdout, err = run_cli("eval", work / "m.pcm.onnx", "--data", work / "data.npz", "--chips", "1",
                                "--times", "1s", "--compensation", "none", "--no-baseline", "-q",
                                "--json", out / "r.json", "--csv", out / "r.csv", "--plot", out / "r.svg")
    assert code == 0, err
    assert json.loads((out / "r.json").read_text())["n_images"] == 20
    assert (out / "r.csv").read_text().startswith("t_seconds,")
    assert (out / "r.svg").read_text().lstrip().startswith("<?xml")
    assert temps(work) == []


# ---- the guard and the writer, in-process ---------------------------------------------------------------
def test_check_outputs_links_special_and_read_only(tmp_path):
    src = tmp_path / "in.onnx"
    src.write_bytes(b"model")
    (tmp_path / "sym.json").symlink_to(src)
    with pytest.raises(AcompileError, match="--json .* overwrite the input"):
        check_outputs({"--json": tmp_path / "sym.json"}, [src])
    if Path("/dev/null").exists():
        with pytest.raises(AcompileError, match="not a regular file"):
            check_outputs({"-o": "/dev/null"}, [src])
    ro = tmp_path / "ro.json"
    ro.write_text("{}")
    ro.chmod(0o444)
    with pytest.raises(AcompileError, match="read-only"):
        check_outputs({"--json": ro}, [src])
    with pytest.raises(AcompileError, match="-o .*give a file name"):
        check_outputs({"-o": tmp_path}, [src])
    # fine: a new file in a folder still to be created; nothing is created by the check
    assert check_outputs({"--json": tmp_path / "a" / "b" / "r.json"}, [src])
    assert not (tmp_path / "a").exists()
    assert temps(tmp_path) == []


def test_write_files_rolls_back_to_the_old_set(tmp_path, monkeypatch):
    a, b, c = tmp_path / "m.onnx", tmp_path / "m.json", tmp_path / "sub" / "m.png"
    write_files({a: b"old model", b: "old json", c: b"old png"})
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(Path(dst))
        if Path(dst) == a and not str(src).endswith(".old.tmp"):  # the primary, moved last, fails
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(AcompileError, match="cannot write"):
        write_files({a: b"new model", b: "new json", c: b"new png"})
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[:3] == [b, c, a]  # the primary last
    assert (a.read_bytes(), b.read_text(), c.read_bytes()) == (b"old model", "old json", b"old png")
    assert temps(tmp_path) == []


def test_write_files_defers_signals_during_the_renames(tmp_path, monkeypatch):
    """A SIGINT that lands between two renames takes effect after the last one."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_files({a: "old", b: "old"})
    real_replace = os.replace

    def replace_then_signal(src, dst):
        real_replace(src, dst)
        if Path(dst) == b:  # first of the two (a is the primary, moved last)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    with pytest.raises(KeyboardInterrupt):
        write_files({a: "new", b: "new"})
    assert (a.read_text(), b.read_text()) == ("new", "new")
    assert temps(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():  # the signal waits for the block's end
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert True  # still running here


def test_write_files_removes_its_temps_when_interrupted_while_writing(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.png"
    write_files({a: "old", b: b"old"})

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_files({a: "new", b: interrupted})
    assert (a.read_text(), b.read_bytes()) == ("old", b"old")
    assert temps(tmp_path) == []


# ---- real processes, real signals ----------------------------------------------------------------------
COMPILE_SET = ("m.pcm.onnx", "m.pcm.json", "m.pcm.md", "m.pcm.png")
EVAL_SET = ("r.json", "r.csv", "r.png")


def _spawn(args: list[str], pause: float) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: str(pause), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """A child that handles Ctrl-C as a user's shell gives it: a test run started in the background
    (`cmd &` in a script) inherits SIGINT ignored, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _hashes(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"finished before the window: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "window never reached"
        time.sleep(0.01)


def _in_temps(folder: Path, names: tuple[str, ...]):
    return lambda: any(p.name.startswith(tuple(f".{n}." for n in names)) and p.name.endswith(".tmp")
                       for p in folder.iterdir())


def _renamed(folder: Path, old: dict[str, str]):
    def ready() -> bool:
        with contextlib.suppress(FileNotFoundError):
            return _hashes(folder, tuple(old)) != old
        return False

    return ready


def _finish(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="module")
def compile_sets(base, tmp_path_factory) -> tuple[dict[str, str], dict[str, str]]:
    """(old, new) hashes of the compile set: the default tiles, and --tile 128x128 compiled apart."""
    from compiler.cli import main

    ref = tmp_path_factory.mktemp("ref")
    shutil.copy(base / "m.onnx", ref / "m.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        main([str(ref / "m.onnx"), "--tile", "128x128", "-q"])
    old, new = _hashes(base, COMPILE_SET), _hashes(ref, COMPILE_SET)
    assert all(old[n] != new[n] for n in COMPILE_SET)
    return old, new


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("window", ["temps", "renames"])
def test_interrupted_compile_leaves_old_or_new_set(sig, window, work, compile_sets):
    old, new = compile_sets
    proc = _spawn([work / "m.onnx", "--tile", "128x128", "-q"], pause=0.3)
    _wait_for(proc, _in_temps(work, COMPILE_SET) if window == "temps" else _renamed(work, old))
    code, err = _finish(proc, sig)
    assert code == 128 + sig, err
    assert "acompile: interrupted" in err and "Traceback" not in err, err
    assert _hashes(work, COMPILE_SET) == (old if window == "temps" else new)
    assert temps(work) == []


def _eval_state(folder: Path) -> str:
    """'old' (the three placeholder files), 'new' (three results of one run) or what is mixed."""
    got = {n: (folder / n).read_bytes() for n in EVAL_SET}
    if all(v == b"old " + n.encode() for n, v in got.items()):
        return "old"
    if any(v.startswith(b"old ") for v in got.values()):
        return f"mixed: {sorted(n for n, v in got.items() if v.startswith(b'old '))} old"
    res = json.loads(got["r.json"])
    rows = got["r.csv"].decode().splitlines()[1:]
    assert [f"{r['mean']:.6f}" for r in res["results"]] == [row.split(",")[3] for row in rows]
    assert got["r.png"].startswith(b"\x89PNG")
    return "new"


@pytest.mark.parametrize("sig, window", [(signal.SIGTERM, "temps"), (signal.SIGINT, "renames")],
                         ids=["SIGTERM-temps", "SIGINT-renames"])
def test_interrupted_eval_leaves_old_or_new_set(sig, window, work):
    for n in EVAL_SET:
        (work / n).write_bytes(b"old " + n.encode())
    old = _hashes(work, EVAL_SET)
    proc = _spawn(["eval", work / "m.pcm.onnx", "--data", work / "data.npz", "--chips", "1", "--times", "1s",
                   "--compensation", "none", "--no-baseline", "-q", "--json", work / "r.json",
                   "--csv", work / "r.csv", "--plot", work / "r.png"], pause=0.4)
    _wait_for(proc, _in_temps(work, EVAL_SET) if window == "temps" else _renamed(work, old))
    code, err = _finish(proc, sig)
    assert code == 128 + sig, err
    assert "Traceback" not in err, err
    assert _eval_state(work) == ("old" if window == "temps" else "new")
    assert temps(work) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("delay", [0.2, 0.5, 0.8, 1.1, 1.5, 2.0, 3.0])
def test_signal_at_any_moment_compile(sig, delay, work, compile_sets):
    """No window hook aimed at: the signal lands wherever the run is after `delay` seconds."""
    old, new = compile_sets
    proc = _spawn([work / "m.onnx", "--tile", "128x128", "-q"], pause=0.1)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert _hashes(work, COMPILE_SET) in (old, new), (delay, sig, err)
    assert temps(work) == []
    if proc.returncode == 0:
        assert _hashes(work, COMPILE_SET) == new


def test_a_signal_wrapped_by_python_is_still_an_interruption(monkeypatch, capsys):
    """A SIGTERM that lands inside class creation (an import) reaches the CLI wrapped in a RuntimeError
    (Python wraps errors raised in __set_name__): still 'interrupted' and 128 + 15, no traceback."""
    from compiler import cli
    from runtime.outputs import Terminated

    def wrapped(*_a, **_k):
        try:
            raise Terminated(signal.SIGTERM)
        except Terminated as exc:
            raise RuntimeError("Error calling __set_name__") from exc

    monkeypatch.setattr(cli.cli, "main", wrapped)
    with pytest.raises(SystemExit) as stop:
        cli.main(["targets"])
    assert stop.value.code == 143
    assert capsys.readouterr().err.strip() == "acompile: interrupted"
