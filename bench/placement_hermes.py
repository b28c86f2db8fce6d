"""Numbers of bench/RESULTS-placement.md: placement, duplication and pipelined throughput of the bundled
models on the `hermes` target (and on HERMES-like chips with more cores), and the HERMES calibration of the
cost model (peak TOPS, TOPS/W vs the published figures). CPU only, a few seconds:

    python bench/placement_hermes.py            # prints the Markdown tables
"""

from __future__ import annotations

from compiler import placement as plc
from compiler.cost import CostModel
from compiler.pipeline import map_model
from compiler.targets import builtin_target, load_target
from models import model_path

MODELS = ("mlp-mnist.onnx", "lenet5-mnist.onnx", "resnet32-cifar10-plain.onnx")
CORES = (64, 128, 256)  # cores per chip: HERMES, then HERMES-like chips with more cores


def main() -> None:
    target = load_target("hermes")
    cost = CostModel.from_target(target)
    print("| model | cores/chip | tiles | copies added | bottleneck (no copies) | pipelined inf/s, no copies "
          "| pipelined inf/s, --duplicate auto | speedup | bottleneck (auto) | latency us (auto) "
          "| layer-by-layer inf/s (auto) | energy uJ (crossbar / ADC+DAC / digital / movement) |")
    print("|" + " --- |" * 12)
    for m in MODELS:
        rep = map_model(model_path(m), target)[1]
        pf = rep["performance"]
        br = pf["energy_breakdown_uj"]
        for cores in CORES:
            pl = plc.plan(rep["layers"], rep["blocks"], rep["totals"]["tiles"], cores, cost, "auto")
            base = pl["without_duplication"]
            print(f"| {m} | {cores} | {rep['totals']['tiles']} | {pl['copies_added']} | "
                  f"{base['bottleneck']['layer']} | {base['pipelined']['throughput_ips']:,.0f} | "
                  f"{pl['pipelined']['throughput_ips']:,.0f} | x{pl['speedup_pipelined']:.2f} | "
                  f"{pl['bottleneck']['layer']} | {pl['pipelined']['latency_us']:,.1f} | "
                  f"{pl['layer_by_layer']['throughput_ips']:,.0f} | {pf['energy_per_inference_uj']:.2f} "
                  f"({br['crossbar']:.2f} / {br['adc_dac']:.2f} / {br['digital']:.2f} / "
                  f"{br['movement']:.2f}) |")
    print()
    figs = plc.peak(cost, 256, 256, builtin_target("hermes")["tile"]["tiles_per_chip"])
    print("| read mode | model TOPS | published TOPS | error | model TOPS/W | published TOPS/W | error |")
    print("|" + " --- |" * 7)
    for mode, c in plc.compare_hermes(figs).items():
        print(f"| {mode} | {c['tops']['model']:.2f} | {c['tops']['published']:g} | "
              f"{100 * c['tops']['error']:+.2f} % | {c['tops_per_w']['model']:.3f} | "
              f"{c['tops_per_w']['published']:g} | {100 * c['tops_per_w']['error']:+.2f} % |")


if __name__ == "__main__":
    main()
