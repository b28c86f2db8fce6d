"""Placement of tiles on cores, weight duplication, pipelined / layer-by-layer throughput, and the chip-level
performance figures (peak TOPS, TOPS/W in one- and four-phase read, energy per inference with its
breakdown including data movement).

Model (batch 1; every number from compiler/cost.py and runtime/physics/constants.py):

* **Cores.** A target's chip has ``tiles_per_chip`` cores; one tile = one core. The mapping's tile ``t``
  sits on chip ``t // tiles_per_chip``, core ``t % tiles_per_chip`` (without ``--pack`` each block of a
  layer has a core of its own, so a layer's blocks are on distinct cores). A model needing more tiles than
  one chip has runs on ``chips = ceil(tiles / tiles_per_chip)`` chips filled in order (multi-chip); the
  free cores are ``chips x tiles_per_chip - tiles``, wherever they are; a chip-to-chip link is costed like
  an on-chip one (not modelled separately).
* **Stages.** Each analog layer is one pipeline stage. Its time per inference is
  ``ceil(mvms / copies) x t_mvm``: the layer's blocks run in parallel, its MVMs (conv: output positions)
  one after another, and ``copies`` copies of its weights split the positions between them. A core that
  holds blocks of several layers (``--pack``) works for each of them in turn: its busy time is the sum
  of their stage times.
* **Pipelined execution** (layers on their own cores working on successive inferences): throughput =
  1 / the largest core busy time (the bottleneck); latency = the sum of the stage times (a stage starts
  when the previous one has produced its whole output; finer-grained overlap is not modelled).
  **Layer-by-layer execution** (one inference at a time): latency = the same sum, throughput = 1 / it.
  Digital ops between layers and the transfer time of activations are not on the critical path
  (assumption); the transfer energy is costed (the target's ``[cost].movement_pj_per_byte``; built-in
  default ``MOVEMENT_PJ_PER_BYTE``).
* **Duplication** (``--duplicate auto|N``): greedily give the layer that bounds the pipelined throughput
  the fewest more copies that shorten its stage (ceil(MVMs / copies) must drop) while they fit in the
  free cores (each copy needs as many cores as the layer has blocks) and the layer stays within N copies
  (auto: no cap); stop when the bottleneck layer cannot get faster that way; copies that did not raise
  the throughput (a tie between several bottleneck layers that the free cores could not all break) are
  given back. Copies go on the free cores in order, never on a used one; the mapped model holds one copy
  of the weights (the copies are a deployment plan: the report's ``placement.cores``). Greedy, not an
  optimum in general (tests/test_placement.py checks it reaches the best level on ResNet-32).
* **Data movement**: every block receives its rows' input activations and sends its columns' outputs
  for each MVM, at ``ceil(bits / 8)`` bytes per value (DAC bits in, ADC bits out): bytes per inference =
  sum over analog layers of mvms x sum over blocks of (rows x bytes_in + cols x bytes_out), each byte
  costing ``[cost].movement_pj_per_byte`` (``CostModel.movement_pj_per_byte``; default
  ``MOVEMENT_PJ_PER_BYTE``). Copies split the positions, so they move no more bytes.
* **Peak**: every core of one chip busy with full tile MVMs at the costed bits: ops per MVM =
  2 x rows x cols; TOPS = cores x ops / t_mvm; TOPS/W = ops / E_full. A four-phase read is four one-phase
  reads (4x time and energy; ``READ_PHASES``).
"""

from __future__ import annotations

import math
from typing import Any

from compiler.cost import TERMS, CostModel
from runtime.physics import constants as phys

#: Most cores the copies may take (the report lists every one; as compiler.pipeline.MAX_TILES for tiles)
MAX_COPY_CORES = 50_000

#: breakdown of the energy per inference as the report states it: cost.py's terms grouped, + movement
BREAKDOWN = {"crossbar": ("array",), "adc_dac": ("adc", "dac"), "digital": ("digital",)}

ASSUMPTIONS = (
    "Batch 1; one tile = one core, a chip has tiles_per_chip cores, a model with more tiles than a chip "
    "spans ceil(tiles / tiles_per_chip) chips (chip links costed like on-chip ones). Each analog layer is a "
    "pipeline stage of time ceil(MVMs / copies) x t_mvm (its blocks in parallel, its output positions in "
    "sequence, copies splitting the positions); a core shared by several layers (--pack) serves them in "
    "turn. Pipelined: throughput = 1 / the busiest core's time, latency = sum of the stage times; "
    "layer-by-layer: throughput = 1 / that sum. Digital ops and activation transfer time are not on the "
    "critical path; activation transfer energy is {pj:g} pJ per byte (the target's [cost]."
    "movement_pj_per_byte; every block receives its rows' inputs and sends its columns' outputs each MVM; "
    "the built-ins' value: Horowitz ISSCC 2014 SRAM access, an assumption). "
    "Duplication copies the bottleneck layer onto free cores only; the mapped model holds one copy.")


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def plan(layers: list[dict[str, Any]], blocks: list[dict[str, Any]], n_tiles: int, tiles_per_chip: int,
         cost: CostModel, duplicate: str | int = 1) -> dict[str, Any]:
    """The report's ``placement`` object (see the module doc); ``duplicate``: 'auto' or the most copies
    of a layer (1: none)."""
    analog = [ly for ly in layers if ly["analog"]]
    tpc = max(int(tiles_per_chip), 1)
    chips = math.ceil(n_tiles / tpc) if n_tiles else 0
    cores_total = chips * tpc
    t_ns = cost.mvm_latency_ns()["mvm"]
    cap = math.inf if duplicate == "auto" else int(duplicate)
    order = {ly["name"]: i for i, ly in enumerate(analog)}
    mvms = {ly["name"]: int(ly["mvms_per_inference"]) for ly in analog}
    nblocks = {ly["name"]: int(ly["blocks"]) for ly in analog}
    on_core: dict[int, list[str]] = {}  # primary tile -> layers with a block there (network order)
    for b in blocks:
        names = on_core.setdefault(int(b["tile"]), [])
        if b["layer"] not in names:
            names.append(b["layer"])
    copies = dict.fromkeys(mvms, 1)

    def stage_ns(name: str, k: int | None = None) -> float:
        return math.ceil(mvms[name] / (copies[name] if k is None else k)) * t_ns

    def bottleneck() -> tuple[float, str | None]:
        """(largest core busy time, the layer on that core with the longest stage; ties: network order)"""
        best, layer = 0.0, None
        for names in on_core.values():
            busy = sum(stage_ns(n) for n in names)
            top = max(names, key=lambda n: (stage_ns(n), -order[n]))
            if busy > best or (busy == best and layer is not None and order[top] < order[layer]):
                best, layer = busy, top
        return best, layer

    base_interval, base_layer = bottleneck()
    free = cores_total - n_tiles
    best = (base_interval, dict(copies), free)
    stop = "no duplication asked (--duplicate 1)" if cap == 1 else ""
    while cap > 1:
        interval, layer = bottleneck()
        if layer is None:
            stop = "no analog layer"
            break
        k, per = copies[layer], math.ceil(mvms[layer] / copies[layer])
        if per <= 1:
            stop = f"another copy would not speed up the bottleneck layer {layer} ({mvms[layer]} MVMs)"
            break
        want = math.ceil(mvms[layer] / (per - 1))  # the fewest copies that take it below `per` MVMs each
        need = (want - k) * nblocks[layer]
        if want > cap:
            stop = (f"the bottleneck layer {layer} would need {want} copies to get faster, more than the "
                    f"{int(cap)} allowed")
            break
        if need > min(free, MAX_COPY_CORES - (cores_total - n_tiles - free)):
            if need <= free:
                stop = f"the copies would take more than {MAX_COPY_CORES:,} cores (the report's bound)"
                break
            stop = (f"{want - k} more cop{'y' if want - k == 1 else 'ies'} of the bottleneck layer {layer} "
                    f"would need {need} free core{'s' if need != 1 else ''}, {free} left")
            break
        copies[layer] = want
        free -= need
        if bottleneck()[0] < best[0]:
            best = (bottleneck()[0], dict(copies), free)
    returned = sum(copies.values()) - sum(best[1].values())
    if returned:
        stop += (f"; the last {returned} cop{'y' if returned == 1 else 'ies'} did not raise the throughput "
                 "(a tie between bottleneck layers) and were given back")
    copies, free = dict(best[1]), best[2]
    interval, layer = bottleneck()

    # ---- which core holds which block: primaries where the mapping put them, copies on free cores ----
    used = set(on_core)
    spare = (c for c in range(cores_total) if c not in used)
    cores: list[dict[str, Any]] = []
    for i, b in enumerate(blocks):
        t = int(b["tile"])
        cores.append({"core": t, "chip": t // tpc, "core_in_chip": t % tpc, "layer": b["layer"], "copy": 0,
                      "block": i})
    by_layer: dict[str, list[int]] = {}
    for i, b in enumerate(blocks):
        by_layer.setdefault(b["layer"], []).append(i)
    for ly in analog:
        for k in range(1, copies[ly["name"]]):
            for i in by_layer.get(ly["name"], []):
                c = next(spare)
                cores.append({"core": c, "chip": c // tpc, "core_in_chip": c % tpc, "layer": ly["name"],
                              "copy": k, "block": i})
    cores.sort(key=lambda e: (e["core"], e["block"]))

    stages = []
    for s, ly in enumerate(analog):
        n = ly["name"]
        stages.append({"stage": s, "layer": n, "alias": ly.get("alias", n), "blocks": nblocks[n],
                       "copies": copies[n], "cores": nblocks[n] * copies[n], "mvms_per_inference": mvms[n],
                       "mvms_per_copy": math.ceil(mvms[n] / copies[n]),
                       "stage_time_us": round(stage_ns(n) * 1e-3, 6)})
    latency_us = sum(stage_ns(n) for n in mvms) * 1e-3
    base_latency_us = sum(mvms.values()) * t_ns * 1e-3

    def ips(us: float) -> float:
        return round(1e6 / us, 3) if us > 0 else 0.0

    return {
        "duplicate": duplicate,
        "cores_per_chip": tpc,
        "chips": chips,
        "cores_total": cores_total,
        "cores_used": cores_total - free if chips else 0,
        "cores_free": free,
        "copies_added": sum(c - 1 for c in copies.values()),
        "duplicated_layers": {n: c for n, c in copies.items() if c > 1},
        "duplication_stopped": stop if cap > 1 else "",
        "mvm_time_ns": round(t_ns, 6),
        "stages": stages,
        "bottleneck": {"layer": layer, "stage_time_us": round(interval * 1e-3, 6)},
        "pipelined": {"throughput_ips": ips(interval * 1e-3), "latency_us": round(latency_us, 6)},
        "layer_by_layer": {"throughput_ips": ips(latency_us), "latency_us": round(latency_us, 6)},
        "without_duplication": {
            "bottleneck": {"layer": base_layer, "stage_time_us": round(base_interval * 1e-3, 6)},
            "pipelined": {"throughput_ips": ips(base_interval * 1e-3),
                          "latency_us": round(base_latency_us, 6)},
            "layer_by_layer": {"throughput_ips": ips(base_latency_us),
                               "latency_us": round(base_latency_us, 6)},
        },
        "speedup_pipelined": round(base_interval / interval, 6) if interval else 1.0,
        "cores": cores,
        "assumption": ASSUMPTIONS.format(pj=cost.movement_pj_per_byte),
    }


def movement(layers: list[dict[str, Any]], blocks: list[dict[str, Any]], cost: CostModel) -> dict[str, Any]:
    """Activation bytes moved between cores per inference and their energy (module doc)."""
    b_in, b_out = _bytes(cost.dac_bits), _bytes(cost.adc_bits)
    per_mvm: dict[str, int] = {}
    for b in blocks:
        r, c = b["row_end"] - b["row_start"], b["col_end"] - b["col_start"]
        per_mvm[b["layer"]] = per_mvm.get(b["layer"], 0) + r * b_in + c * b_out
    total = sum(int(ly["mvms_per_inference"]) * per_mvm.get(ly["name"], 0) for ly in layers if ly["analog"])
    pj = cost.movement_pj_per_byte
    return {"bytes_per_inference": total, "pj_per_byte": pj,
            "bytes_per_value": {"input": b_in, "output": b_out},
            "energy_uj": round(total * pj * 1e-6, 9)}


def peak(cost: CostModel, rows: int, cols: int, cores: int) -> dict[str, Any]:
    """Peak TOPS and TOPS/W of one chip (all cores busy with full rows x cols MVMs) per read mode."""
    ops = 2 * rows * cols
    e_pj = sum(cost.block_energy_pj(rows, cols).values())
    t_ns = cost.mvm_latency_ns()["mvm"]
    out = {}
    for p in phys.READ_PHASES:
        out[f"{p}-phase"] = {"read_phases": p, "tops": round(cores * ops / (p * t_ns) * 1e-3, 6),
                             "tops_per_w": round(ops / (p * e_pj), 6)}
    return out


def compare_hermes(figures: dict[str, Any]) -> dict[str, Any]:
    """The peak figures next to HERMES' published ones, with the relative error of each."""
    out = {}
    for p, pub in phys.HERMES_PUBLISHED.items():
        mine = figures[f"{p}-phase"]
        out[f"{p}-phase"] = {k: {"model": mine[k], "published": v, "error": round(mine[k] / v - 1, 6)}
                             for k, v in pub.items()}
    return out


def performance(report: dict[str, Any], target: dict[str, Any], cost: CostModel) -> dict[str, Any]:
    """The report's ``performance`` object: peak figures, energy per inference with its breakdown (MVM
    terms + data movement), effective TOPS and TOPS/W of this model."""
    R, C = report["tile"]["rows"], report["tile"]["cols"]
    t = report["totals"]
    mv = movement(report["layers"], report["blocks"], cost)
    split = t["energy_breakdown_uj"]
    breakdown = {k: round(sum(split[x] for x in terms), 9) for k, terms in BREAKDOWN.items()}
    breakdown["movement"] = mv["energy_uj"]
    energy = round(sum(breakdown.values()), 9)
    ops = sum(2 * ly["matrix"][0] * ly["matrix"][1] * ly["mvms_per_inference"]
              for ly in report["layers"] if ly["analog"])
    pl = report["placement"]
    figs = peak(cost, R, C, int(target["tile"]["tiles_per_chip"]))
    out: dict[str, Any] = {
        "peak": figs,
        "energy_per_inference_uj": energy,
        "energy_breakdown_uj": breakdown,
        "movement": mv,
        "ops_per_inference": ops,
        "effective_tops_pipelined": round(ops * pl["pipelined"]["throughput_ips"] * 1e-12, 6),
        "effective_tops_per_w": round(ops / (energy * 1e6), 6) if energy else 0.0,
    }
    if target["name"] == "hermes":
        out["vs_published_hermes"] = compare_hermes(figs)
    return out


assert set(x for v in BREAKDOWN.values() for x in v) == set(TERMS)
