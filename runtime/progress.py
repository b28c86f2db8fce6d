"""Progress reporting shared by every long loop (compile, eval, finetune, train, sweep, data decoding).

On a terminal it is a tqdm bar on stderr. Off a terminal (CI logs, `nohup`, a pipe) a bar would print
nothing useful, so it writes one plain line now and then instead::

    eval: 120/400 batches (30 %), 27 s elapsed, ~63 s left (chip 2/10 t=1h global)

one every `interval` seconds (10 s) or every tenth of the work, whichever comes first, but never two
within `min_gap` seconds (1 s): a loop that ends within a second prints nothing, a 90 s one about ten
lines, and a closing ``eval: done, 400 batches in 93 s`` follows when any line was printed or the loop
took 3 s or more.

`ACOMPILE_PROGRESS` overrides the choice: ``bar`` (tqdm even off a terminal), ``lines`` (plain lines even
on a terminal), ``off`` (nothing); ``auto`` or unset: by the stream. Every package may import this module
(it sits beside runtime.errors at the bottom: no torch, tqdm only when a bar is drawn).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

MODES = ("auto", "bar", "lines", "off")
_clock = time.monotonic  # (tests replace it)
ENV = "ACOMPILE_PROGRESS"


def mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off`` for `stream` (stderr by default), after `ACOMPILE_PROGRESS`."""
    want = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if want not in MODES:
        want = "auto"
    if want != "auto":
        return want
    stream = stream if stream is not None else sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or unusual stream
        return "lines"


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class Progress:
    """A progress report: ``update(n)``, ``set_postfix_str`` / ``set_postfix``, ``write``, ``close``.

    The same calls as a tqdm bar, so loops use it the same way; iterate over it when built with an
    iterable. ``enabled=False`` (e.g. ``--quiet``) reports nothing.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, stream: TextIO | None = None,
                 interval: float = 10.0, min_gap: float = 1.0, leave: bool = False) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream
        self.interval = interval
        self.min_gap = min_gap
        self.done_after = 3 * min_gap  # a closing line also after a loop this long that printed none
        self.n = 0
        self.postfix = ""
        self.start = _clock()
        self._last_line = self.start
        self._lines = 0
        self._next_step = 1  # the next tenth of the work that prints a line
        self._closed = False
        self._bar = None
        self.mode = mode(stream) if enabled else "off"
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                             file=stream if stream is not None else sys.stderr)

    # ---- the tqdm-like interface ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("Progress built without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            self._maybe_line()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def write(self, message: str, file: TextIO | None = None) -> None:
        """A message that does not break the bar (tqdm.write), or a plain line; nothing when disabled."""
        if self.mode == "off":
            return
        write(message, file)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and (self._lines or _clock() - self.start >= self.done_after):
            took = _seconds(_clock() - self.start)
            if self.total is None:
                self._emit(f"{self.desc}: done, {self.n} {self.unit} in {took}")
            elif self.n >= self.total:
                self._emit(f"{self.desc}: done, {self.total} {self.unit} in {took}")
            else:
                self._emit(f"{self.desc}: stopped at {self.n}/{self.total} {self.unit} after {took}")

    # ---- plain lines ----------------------------------------------------------------------------
    def _maybe_line(self) -> None:
        if self.total and self.n >= self.total:
            return  # the closing line says it
        now = _clock()
        since = now - self._last_line
        step_due = False
        if self.total:
            step = math.floor(10 * self.n / self.total)
            if step >= self._next_step:
                step_due = True
        if since >= self.interval or (step_due and since >= self.min_gap):
            if self.total:
                self._next_step = math.floor(10 * self.n / self.total) + 1
            self._last_line = now
            self._emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The one-line report of where the loop stands."""
        now = _clock() if now is None else now
        elapsed = now - self.start
        if self.total:
            parts = [f"{self.desc}: {self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %)",
                     f"{_seconds(elapsed)} elapsed"]
            if 0 < self.n < self.total:
                parts.append(f"~{_seconds(elapsed * (self.total - self.n) / self.n)} left")
        else:
            parts = [f"{self.desc}: {self.n} {self.unit}", f"{_seconds(elapsed)} elapsed"]
        text = ", ".join(parts)
        return f"{text} ({self.postfix})" if self.postfix else text

    def _emit(self, text: str) -> None:
        self._lines += 1
        stream = self.stream if self.stream is not None else sys.stderr
        print(text, file=stream, flush=True)


def progress(iterable: Iterable | None = None, **kw: Any) -> Progress:
    """``Progress(iterable, total=..., desc=..., unit=..., enabled=...)``: a bar or plain lines."""
    return Progress(iterable, **kw)


def write(message: str, file: TextIO | None = None) -> None:
    """Print a message (an epoch summary) without breaking a running bar: tqdm.write in bar mode."""
    if mode() == "bar":
        from tqdm import tqdm

        tqdm.write(message, file=file)
    else:
        print(message, file=file if file is not None else sys.stdout, flush=True)
