"""Command-line entry point: `acompile MODEL.onnx ...` compiles; sub-commands load lazily.

Sub-commands live next to the code they drive (compiler, runtime, hwtrain) and are imported only when
used, so `acompile targets` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from runtime.errors import AcompileError

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "compile": "compiler.commands:compile_cmd",
    "report": "compiler.commands:report_cmd",
    "targets": "compiler.commands:targets_cmd",
    "eval": "runtime.cli:eval_cmd",
    "explore": "runtime.explore_cli:explore_cmd",
    "train": "hwtrain.cli:train_cmd",
    "finetune": "hwtrain.finetune_cli:finetune_cmd",
    "sweep": "hwtrain.inmemory.cli:sweep_cmd",
}
DEFAULT_COMMAND = "compile"
#: click >= 8.2 raises this (a UsageError) for a bare `acompile`
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class LazyDefaultGroup(click.Group):
    """A group whose commands are imported on first use and whose default command is `compile`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # `acompile model.onnx --target pcm` means `acompile compile model.onnx --target pcm`.
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            args = [DEFAULT_COMMAND, *args]
        return super().resolve_command(ctx, args)


@click.group(cls=LazyDefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="acompile")
def cli() -> None:
    """acompile: map ONNX networks onto PCM crossbars, emulate them over time, train them for it.

    \b
      acompile MODEL.onnx --target pcm        compile (same as `acompile compile ...`)
      acompile report MAPPED.onnx             the tile mapping report again
      acompile targets                        built-in hardware profiles
      acompile eval MAPPED.onnx --data mnist  accuracy retention over simulated time
      acompile explore MODEL.onnx --set adc_bits=4,6,8 --out DIR
                                              accuracy over a grid of hardware variants
      acompile finetune MODEL.onnx --target pcm --data cifar10
                                              hardware-aware fine-tuning of your own model
      acompile train mlp --dataset mnist      hardware-aware / in-memory training of the zoo
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback.

    SIGTERM stops a command like Ctrl-C does (runtime.outputs.interrupt_on_sigterm): temp files are
    removed, no output set is left half-written; the exit code is 128 + the signal (130, 143)."""
    from runtime.outputs import interrupt_exit_code, interrupt_on_sigterm

    try:
        with interrupt_on_sigterm():
            cli.main(args=argv, prog_name="acompile", standalone_mode=False)
    except AcompileError as exc:
        click.echo(f"acompile: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        code = interrupt_exit_code(exc)
        click.echo("acompile: interrupted" if exc.__cause__ or exc.__context__ else "acompile: aborted",
                   err=True)
        sys.exit(code)
    except _NO_ARGS_IS_HELP as exc:  # bare `acompile`: the help, as before
        click.echo(exc.format_message(), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        # one line like every other error; the command's -h has the usage
        ctx = exc.ctx
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        click.echo(f"acompile: error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"acompile: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        click.echo("acompile: interrupted", err=True)
        sys.exit(interrupt_exit_code(exc))
    except Exception as exc:  # a signal that landed where Python wraps exceptions (e.g. __set_name__)
        cause = _interrupt_in_chain(exc)
        if cause is None:
            raise
        click.echo("acompile: interrupted", err=True)
        sys.exit(interrupt_exit_code(cause))


def _interrupt_in_chain(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C / SIGTERM behind an exception that wraps it (class creation wraps errors raised in
    __set_name__ in a RuntimeError, so a signal during an import can arrive wrapped)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


if __name__ == "__main__":
    main()
