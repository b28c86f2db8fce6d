"""Output files of every command: checked before any work, written as one set, never half.

Standard library only (plus runtime.errors), so every CLI module may import it and it costs no torch.

* `check_outputs(outputs, inputs)` runs before a command does any work: each named output (flag ->
  path; derived outputs such as the reports beside a mapped model included) must not be, or resolve to,
  one of the command's input files or another output, must carry a suffix that fits its flag
  (`SUFFIXES`), must not be a folder, a special file or a read-only file, and its folder must be
  writable. A folder that does not exist yet is fine when its nearest existing parent is writable: every
  command creates missing folders of its outputs (one behaviour for all commands, CONTRACTS §2). Every
  problem is one `AcompileError` naming the flag.
* `write_files(files, primary=...)` writes a result set: every file goes to a hidden temp file
  (`.NAME.XXXXXXXX.tmp`) in its own destination folder first; only when all are written are they moved
  into place with `os.replace`, the primary file (the mapped / trained model) last. The renames run with
  SIGINT and SIGTERM deferred (`deferred_interrupts`), so an interrupt at any moment leaves either the
  complete old set (interrupted before the renames: the temps are removed) or the complete new set
  (interrupted during them: the renames finish, then the interrupt is raised). An OSError during the
  renames (say a folder made read-only meanwhile) rolls back: each replaced file gets its old content
  back from a hard-link backup taken before the first rename. Only a hard kill (SIGKILL, power loss)
  inside the rename window, which lasts a few system calls, can leave a mixed set; since the primary
  file is renamed last, a new primary file always has its new companions beside it.
* `interrupt_on_sigterm()` makes SIGTERM raise `Terminated` (a KeyboardInterrupt), so `kill PID` takes
  the same clean-up path as Ctrl-C: temp files removed, nothing half-written; `acompile` exits with
  128 + the signal number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from runtime.errors import AcompileError

#: The suffixes an output flag takes (case-insensitive). Flags not listed take any suffix.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "--json": (".json",),
    "--csv": (".csv",),
    "--plot": (".png", ".svg", ".pdf"),
    "--md": (".md",),
    "--html": (".html", ".htm"),
    "--png": (".png",),
}
ONNX = (".onnx",)

#: Contents of one output: bytes, text (UTF-8) or a function writing to an open binary file.
Content = bytes | str | Callable[[BinaryIO], None]

#: Test hook: seconds to sleep after each temp file is written and after each rename (a deterministic
#: window for the interruption tests, tests/test_cli_reliability.py). Unset in normal use.
PAUSE_ENV = "ACOMPILE_TEST_WRITE_PAUSE"

TEMP_SUFFIX = ".tmp"


# ---- interrupts ---------------------------------------------------------------------------------------
class Terminated(KeyboardInterrupt):
    """SIGTERM as a KeyboardInterrupt: the same clean-up path as Ctrl-C."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread."""
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit_code(exc: BaseException) -> int:
    """128 + the signal that stopped the run: 130 for Ctrl-C, 143 for SIGTERM."""
    while exc is not None:
        if isinstance(exc, Terminated):
            return 128 + int(exc.signum)
        exc = exc.__cause__ or exc.__context__
    return 128 + int(signal.SIGINT)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT / SIGTERM that arrive inside the block take effect when it ends (the handler that was in
    place then runs: KeyboardInterrupt, `Terminated`, or the default action). Python runs signal
    handlers in the main thread only, so this holds whatever other threads (torch, tqdm) exist."""
    if not _on_main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


# ---- the guard ----------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _existing_parent(path: Path) -> Path:
    folder = path.absolute().parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _writable(folder: Path) -> bool:
    """Can a file be created in `folder`? A real probe: os.access says yes to root even on /sys or a
    read-only mount."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    with deferred_interrupts():  # the probe never stays behind
        try:
            fd, probe = tempfile.mkstemp(prefix=".acompile-probe.", suffix=TEMP_SUFFIX, dir=folder)
        except OSError:
            return False
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return True


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None] = (),
                  suffixes: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Path]:
    """Check a command's outputs before it does any work; returns {flag: Path} of those given.

    outputs: flag (as the user sees it, e.g. "--json", "-o", "-o (report)") -> path, None = not asked.
    inputs: every file the command reads (model, data file, target TOML, checkpoint to resume, ...).
    suffixes: flag -> allowed suffixes, on top of `SUFFIXES` (which knows --json, --csv, --plot, ...).
    """
    allowed = {**SUFFIXES, **(suffixes or {})}
    given = {flag: Path(p) for flag, p in outputs.items() if p is not None and str(p) != ""}
    sources = [Path(p) for p in inputs if p is not None and str(p) != ""]
    seen: list[tuple[str, Path]] = []
    for flag, path in given.items():
        shown = repr(str(path))
        if str(path) in ("-",):
            raise AcompileError(f"{flag} {shown}: give a file name (output to stdout is not supported)")
        if path.name in ("", ".", "..") or os.path.isdir(path):
            raise AcompileError(f"{flag} {shown} is a folder; give a file name")
        for src in sources:
            if _same_file(path, src):
                raise AcompileError(f"{flag} {shown} would overwrite the input file {str(src)!r}")
        for other_flag, other in seen:
            if _same_file(path, other):
                raise AcompileError(f"{flag} and {other_flag} name the same file {shown}")
        seen.append((flag, path))
        ok = allowed.get(flag.split(" ")[0])
        if ok is not None and path.suffix.lower() not in ok:
            raise AcompileError(f"{flag} {shown}: the file name must end in {' or '.join(ok)}")
        if os.path.lexists(path):
            try:
                st = os.stat(path)
            except OSError:  # a dangling link: the link is replaced by the file
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise AcompileError(f"{flag} {shown} exists and is not a regular file")
            if st is not None and not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                raise AcompileError(f"{flag} {shown} exists and is read-only; remove it or write elsewhere")
        folder = _existing_parent(Path(os.path.realpath(path)) if os.path.islink(path) else path)
        if not folder.is_dir():
            raise AcompileError(f"{flag} {shown}: {str(folder)!r} is not a folder")
        if not _writable(folder):
            raise AcompileError(f"{flag} {shown}: folder {str(folder)!r} is not writable")
    return given


# ---- the writer ---------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pause() -> None:
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


def _write(fd: int, content: Content) -> None:
    with os.fdopen(fd, "wb") as f:
        if callable(content):
            content(f)
        else:
            f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())


def _unlink_all(paths: Iterable[str]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


def write_files(files: Mapping[str | os.PathLike, Content], primary: str | os.PathLike | None = None
                ) -> list[Path]:
    """Write a result set all-or-nothing (module docstring); returns the paths written.

    files: destination -> content (bytes, str, or a function writing to a binary file object).
    primary: the file moved into place last [default: the first of `files`]. Missing folders are
    created. On an OSError nothing of the new set stays and every old file is kept (AcompileError).
    """
    items = [(Path(d), c) for d, c in files.items()]
    if not items:
        return []
    first = Path(primary) if primary is not None else items[0][0]
    # write through a symlink to its file (replacing the link itself would change the user's layout)
    dests = [(Path(os.path.realpath(d)) if os.path.islink(d) else d, c) for d, c in items]
    order = [i for i, (d, _) in enumerate(items) if d != first] + \
            [i for i, (d, _) in enumerate(items) if d == first]
    temps: dict[int, str] = {}
    backups: dict[int, str] = {}
    replaced: list[int] = []
    current = dests[0][0]
    mode = 0o666 & ~_umask()  # mkstemp makes 0600; outputs get the usual permissions
    try:
        try:
            for i, (dest, content) in enumerate(dests):
                current = dest
                dest.parent.mkdir(parents=True, exist_ok=True)
                with deferred_interrupts():  # a temp file is always on the list that is cleaned up
                    fd, temps[i] = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX,
                                                    dir=dest.parent)
                os.fchmod(fd, mode)
                _write(fd, content)
                _pause()
            with deferred_interrupts():
                for i in order:
                    dest = dests[i][0]
                    if os.path.isfile(dest):  # hard-link backup of the old file, for a roll-back
                        bak = str(dest.parent / f".{dest.name}.{os.urandom(4).hex()}.old{TEMP_SUFFIX}")
                        try:
                            os.link(dest, bak)
                            backups[i] = bak
                        except OSError:
                            pass  # no hard links here: a failed rename below cannot restore this one
                for i in order:
                    current = dests[i][0]
                    os.replace(temps[i], current)
                    replaced.append(i)
                    del temps[i]
                    _pause()
                _fsync_folders({dests[i][0].parent for i in order})
        except OSError as exc:
            with deferred_interrupts():
                for i in reversed(replaced):  # roll back: the old set again
                    with contextlib.suppress(OSError):
                        if i in backups:
                            os.replace(backups.pop(i), dests[i][0])
                        else:
                            os.unlink(dests[i][0])
            raise AcompileError(f"cannot write {str(current)!r} ({exc.strerror or exc})") from None
    finally:
        with deferred_interrupts():
            _unlink_all(temps.values())
            _unlink_all(backups.values())
    return [d for d, _ in items]


def _fsync_folders(folders: Iterable[Path]) -> None:
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
