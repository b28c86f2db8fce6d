"""The one exception type users see: the CLI prints its message as one line and exits with code 2."""

from __future__ import annotations


class AcompileError(Exception):
    """A problem with the user's input (file, model, target, data, option) — never a bug of ours.

    The message must name the problem and, where there is one, the node or key involved.
    """

    exit_code = 2
