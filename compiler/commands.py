"""Click commands of the compiler: ``compile`` (the default command), ``report``, ``targets``."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from compiler.targets import parse_tile
from runtime import options as opt
from runtime.errors import AcompileError
from runtime.outputs import ONNX, check_outputs


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command(
    "compile",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "target_spec", default="pcm", show_default=True,
              help="Built-in target (pcm, hermes, ideal) or a TOML file.")
@click.option("--tile", "tile_spec", metavar="RxC", type=opt.Parsed(lambda text, _: parse_tile(text), "RxC"),
              help="Override the target's tile size, e.g. 512x512.")
@click.option("--digital", "digital", multiple=True, metavar="NAME,...",
              help="Force these layers digital (node names, module paths like layer1.conv1, or "
                   "weight prefixes).")
@click.option("--weight-scale", type=click.Choice(["layer", "column"]), default=None,
              help="Conductance scale per layer or per column [default: from target].")
@click.option("--replicate", type=click.Choice(["none", "free-rows"]), default=None,
              help="Copies of each small layer in the rows its tile leaves free, read together (device "
                   "errors average out; no extra tile) [default: from target].")
@click.option("--pack", is_flag=True, help="Pack small blocks of several layers into shared tiles.")
@click.option("--duplicate", type=opt.DUPLICATE, default="1", show_default=True, metavar="auto|N",
              help="Copy the weights of the layers that bound the pipelined throughput onto free cores: "
                   "auto (while free cores remain) or at most N copies per layer (1 = none). The report "
                   "states placement, stages, bottleneck, throughput and latency.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Mapped model path (.onnx) [default: MODEL.pcm.onnx beside MODEL]; the reports "
                   "(.json, .md, .png) beside it. Missing folders are created.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the output path.")
@click.option("--eval", "do_eval", is_flag=True,
              help="After compiling, run `acompile eval` on the mapped model; further options go to eval.")
@click.pass_context
def compile_cmd(ctx: click.Context, model: Path, target_spec: str, tile_spec: tuple[int, int] | None,
                digital: tuple[str, ...], weight_scale: str | None, replicate: str | None, pack: bool,
                duplicate: str | int, output: Path | None, quiet: bool, do_eval: bool) -> None:
    """Map MODEL (ONNX) onto analog crossbar tiles; write MODEL.pcm.onnx and the mapping report.

    \b
      acompile resnet32.onnx --target pcm
      acompile models/lenet5-mnist.onnx --target hermes --tile 512x512 --digital conv1,fc3 -o out/m.onnx
      acompile mlp.onnx --target pcm --eval --data mnist --times 1s,1d
    """
    if ctx.args and not do_eval:
        raise click.UsageError(f"unknown option or extra argument: {' '.join(ctx.args)} "
                               "(eval options need --eval)", ctx=ctx)
    # ---- every option and output before any work ---------------------------------------------------
    from compiler.artifact import report_paths
    from compiler.pipeline import default_output

    out = output if output is not None else default_output(model)
    outputs: dict[str, Path | None] = {"-o": out}
    outputs.update({f"-o's .{ext} report": p for ext, p in report_paths(out).items()})
    inputs: list[Path | str | None] = [model, target_spec if Path(target_spec).is_file() else None]
    eval_cmd = eval_ctx = None
    if do_eval:
        try:
            from runtime.cli import eval_cmd
        except ImportError as exc:
            raise AcompileError(f"--eval needs the runtime package ({exc})") from None
        # parse (and so check) the eval options now, not after the compile
        eval_ctx = eval_cmd.make_context("acompile eval", [str(out), *ctx.args], parent=None)
        for flag, key in (("--json", "json_path"), ("--csv", "csv_path"), ("--plot", "plot_path")):
            outputs[flag] = eval_ctx.params.get(key)
        data = eval_ctx.params.get("data")
        inputs.append(data if isinstance(data, str) and data.endswith(".npz") else None)
    check_outputs(outputs, inputs, suffixes={"-o": ONNX})

    from compiler.pipeline import compile_model
    from compiler.targets import load_target, with_overrides

    target = with_overrides(load_target(target_spec), tile_spec, weight_scale, replicate)
    result = compile_model(model, target, out, _split_names(digital), pack, progress=not quiet,
                           duplicate=duplicate)
    for warning in result.report.get("warnings", []):
        click.echo(f"acompile: warning: {warning}", err=True)
    t = result.report["totals"]
    if quiet:
        click.echo(str(result.paths["model"]))
    else:
        click.echo(f"{result.paths['model']}: {t['analog_layers']} analog / {t['digital_layers']} digital "
                   f"layers, {t['tiles']} tiles of {target['tile']['rows']}x{target['tile']['cols']} "
                   f"({t['chips']} chip{'s' if t['chips'] != 1 else ''}), utilization "
                   f"{100 * t['utilization']:.1f} %, {t['devices']} devices, "
                   f"~{t['energy_per_inference_uj']:.2f} uJ and ~{t['latency_per_inference_us']:.2f} us "
                   "per inference")
        pl = result.report["placement"]
        pipe, lbl = pl["pipelined"]["throughput_ips"], pl["layer_by_layer"]["throughput_ips"]
        click.echo(f"pipelined: ~{pipe:,.0f} inferences/s (bottleneck {pl['bottleneck']['layer']}), layer by "
                   f"layer ~{lbl:,.0f}/s, latency ~{pl['pipelined']['latency_us']:.2f} us; "
                   f"{pl['copies_added']} weight copies, {pl['cores_used']} of {pl['cores_total']} cores "
                   "used; "
                   f"~{result.report['performance']['energy_per_inference_uj']:.2f} uJ with data movement")
        click.echo("reports: " + ", ".join(str(result.paths[k]) for k in ("json", "md", "png")))
    if eval_cmd is not None and eval_ctx is not None:
        with eval_ctx:
            eval_cmd.invoke(eval_ctx)


@click.command("report")
@click.argument("mapped", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "json", "png", "html"]), default="md",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file, its suffix that of the format [default: stdout for md/json/html, "
                   "MAPPED.png for png]. Missing folders are created.")
def report_cmd(mapped: Path, fmt: str, output: Path | None) -> None:
    """The tile mapping report again, from a mapped model's metadata."""
    if output is None and fmt == "png":
        stem = mapped.name[: -len(".onnx")] if mapped.name.endswith(".onnx") else mapped.name
        output = mapped.with_name(f"{stem}.png")
    suffix = {"md": (".md",), "json": (".json",), "png": (".png",), "html": (".html", ".htm")}[fmt]
    check_outputs({"-o": output}, [mapped], suffixes={"-o": suffix})

    from compiler.artifact import write_atomically
    from compiler.pipeline import read_mapped
    from compiler.report import to_html, to_json, to_markdown

    report, _target = read_mapped(mapped)
    if fmt == "png":
        from compiler.report_plot import render_png

        assert output is not None
        write_atomically({output: render_png(report)})
        click.echo(str(output))
        return
    if fmt == "md":
        text = to_markdown(report)
    elif fmt == "json":
        text = to_json(report)
    else:
        from compiler.report_plot import render_png

        uri = "data:image/png;base64," + base64.b64encode(render_png(report)).decode()
        text = to_html(report, uri)
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomically({output: text.encode()})
        click.echo(str(output))


@click.command("targets")
@click.argument("name", required=False)
def targets_cmd(name: str | None) -> None:
    """Built-in hardware profiles and their parameters (or one profile, or a TOML file, in full)."""
    from compiler.targets import BUILTIN, builtin_target, format_section, load_target

    names = [name] if name is not None else list(BUILTIN)  # `targets ""` is an unknown name, not "all"
    for i, n in enumerate(names):
        t = load_target(n) if name is not None else builtin_target(n)
        if i:
            click.echo("")
        click.echo(f"{t['name']}: {t['description']}")
        for section in ("tile", "device", "periphery", "mapping", "cost"):
            click.echo(f"  [{section}] {format_section(t, section)}")
    if name is None:
        from runtime.physics.devices import device_class, device_names

        click.echo("\nDevice models ([device] model = ...):")
        for d in device_names():
            cls = device_class(d)
            click.echo(f"  {d}: {cls.summary}; keys: {', '.join(cls.keys())}")
        click.echo("\nUse --target NAME or --target FILE.toml (a file may set base = \"pcm\" and override "
                   "keys, [device] model = \"rram\" switches the device); `acompile targets NAME` shows one.")
