"""Energy and latency of tile MVMs: a small, documented model calibrated on the target's [cost] figures.

The target gives the energy and latency of ONE FULL MVM of its reference tile (``[cost]``:
``energy_per_mvm_pj``, ``latency_per_mvm_ns`` at ``ref_rows`` x ``ref_cols``, ``ref_dac_bits`` /
``ref_adc_bits``; HERMES' 256x256 core at 8/8 bits for the built-ins). The model splits that energy into
four terms (shares: the target's ``[cost]`` ``share_array``, ``share_dac``, ``share_adc``,
``share_digital``, summing to 1; built-in default ``runtime.physics.constants.COST_ENERGY_SHARE``) and
scales each with what a matrix block of ``r`` rows x ``c`` columns actually uses, at the target's converter
bits ``b_dac``, ``b_adc``::

    w_in(b)  = 2^(b - 1) / 2^(ref_dac_bits - 1)       PWM input window (sign + magnitude), HERMES
    w_adc(b) = 2^b / 2^ref_adc_bits                   ADC conversion (CCO count / Walden FOM), ~ 2^bits

    E_block  = e_cell  * r * c * w_in(b_dac)          array: every cell driven, current over the window
             + e_dac   * r     * w_in(b_dac)          one PWM driver per row used
             + e_adc   * c     * w_adc(b_adc)         one ADC conversion per column used
             + e_dig   * c                            digital accumulate + affine rescale per output

    e_cell = s_array E_ref / (R_ref C_ref),  e_dac = s_dac E_ref / R_ref,
    e_adc  = s_adc   E_ref / C_ref,          e_dig = s_digital E_ref / C_ref      (s_* sum to 1)

so a full reference-tile MVM at the reference bits costs exactly ``E_ref``. Latency of one MVM (every row
driven at once, one ADC per column, so it does not depend on r or c)::

    t_mvm = (1 - a) t_ref * w_in(b_dac) + a t_ref * w_adc(b_adc),   a = [cost].adc_time_share

(default ``COST_LATENCY_ADC_SHARE``). The data-movement energy per byte of compiler/placement.py is the
target's ``[cost].movement_pj_per_byte`` (default ``MOVEMENT_PJ_PER_BYTE``), carried here too. A target
stored in a model mapped by an older acompile lacks these keys: the constants stand in for them.

Per inference (batch 1): energy = sum over analog layers of mvms_per_inference x sum over the layer's
blocks of E_block; latency = sum over analog layers of mvms_per_inference x t_mvm (a layer's blocks run
in parallel on their own tiles; layers and a layer's output positions run one after another). For a
K x N weight on R x C tiles the block sums have a closed form: sum r*c = K*N, sum r = K*ceil(N/C),
sum c = N*ceil(K/R) -- smaller tiles cost more only through the extra conversions of split matrices.
Converter bits 0 (the `ideal` target: no quantization) are costed at the reference bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.errors import AcompileError
from runtime.physics import constants as phys

TERMS = ("array", "dac", "adc", "digital")
#: the [cost] key of each term's energy share
SHARE_KEYS = {t: f"share_{t}" for t in TERMS}

ASSUMPTIONS = (
    "Energy of one tile MVM = array (cells driven: rows x cols used, over the PWM input window) + DAC "
    "(one PWM row driver per row used) + ADC (one conversion per column used, energy ~ 2^adc_bits) + "
    "digital (accumulate/rescale per output column); unused rows and columns of a tile cost nothing "
    "(their drivers and ADCs idle). Calibrated so that a full {R}x{C} MVM at {bd}-bit DAC / {ba}-bit ADC "
    "costs the target's {E} pJ and {T} ns; the split of that energy ({shares}; the target's [cost] "
    "share_* keys, the built-ins' an assumption, not a measured breakdown). Latency of one MVM = PWM "
    "integration (2^(dac_bits-1) steps) + ADC conversion (~2^adc_bits; the ADC's share of the reference "
    "time is [cost].adc_time_share = {a:.4g}), independent of the rows and columns used (all rows driven "
    "at once, one ADC per column, as HERMES). Batch 1, layer by layer: a layer's blocks run in parallel "
    "on their tiles (with --pack too: an optimistic bound), its output positions and the layers run "
    "sequentially; digital "
    "ops between layers (BN, activations, pooling) and data movement are not costed. Converter bits 0 "
    "(ideal) are costed at the reference bits.")


def _ref(cost: dict[str, Any], key: str, default: int) -> int:
    """A reference key of [cost]; a target stored by an older acompile lacks them: the built-ins' values."""
    return int(cost.get(key, default))


def shares_of(cost: dict[str, Any]) -> dict[str, float]:
    """The energy share of each term from a [cost] table (a key it lacks: the COST_ENERGY_SHARE default)."""
    return {t: float(cost.get(SHARE_KEYS[t], phys.COST_ENERGY_SHARE[t])) for t in TERMS}


def shares_error(shares: dict[str, float]) -> str | None:
    """None when the four shares sum to 1 (a full reference MVM then costs exactly the target's figure),
    else a one-line reason naming the keys."""
    total = sum(shares[t] for t in TERMS)
    if abs(total - 1.0) <= 1e-9:
        return None
    terms = " + ".join(f"{SHARE_KEYS[t]} ({shares[t]:g})" for t in TERMS)
    return f"[cost] {terms} must sum to 1, got {total:.6g}"


@dataclass(frozen=True)
class CostModel:
    """The cost of tile MVMs on one resolved target (see the module doc for the formulas)."""

    energy_ref_pj: float
    latency_ref_ns: float
    ref_rows: int
    ref_cols: int
    ref_dac_bits: int
    ref_adc_bits: int
    dac_bits: int  # as costed (0 in the target -> the reference bits)
    adc_bits: int
    share: tuple[tuple[str, float], ...] = tuple(phys.COST_ENERGY_SHARE.items())  # (term, share) per TERMS
    adc_time_share: float = phys.COST_LATENCY_ADC_SHARE
    movement_pj_per_byte: float = phys.MOVEMENT_PJ_PER_BYTE

    @classmethod
    def from_target(cls, target: dict[str, Any]) -> CostModel:
        cost, per = target["cost"], target["periphery"]
        ref_dac = _ref(cost, "ref_dac_bits", phys.COST_REF_DAC_BITS)
        ref_adc = _ref(cost, "ref_adc_bits", phys.COST_REF_ADC_BITS)
        shares = shares_of(cost)
        bad = shares_error(shares)
        if bad is not None:
            raise AcompileError(f"target {target.get('name', '?')!r}: {bad}")
        return cls(energy_ref_pj=float(cost["energy_per_mvm_pj"]),
                   latency_ref_ns=float(cost["latency_per_mvm_ns"]),
                   ref_rows=_ref(cost, "ref_rows", phys.COST_REF_ROWS),
                   ref_cols=_ref(cost, "ref_cols", phys.COST_REF_COLS),
                   ref_dac_bits=ref_dac, ref_adc_bits=ref_adc,
                   dac_bits=int(per["dac_bits"]) or ref_dac, adc_bits=int(per["adc_bits"]) or ref_adc,
                   share=tuple(shares.items()),
                   adc_time_share=float(cost.get("adc_time_share", phys.COST_LATENCY_ADC_SHARE)),
                   movement_pj_per_byte=float(cost.get("movement_pj_per_byte", phys.MOVEMENT_PJ_PER_BYTE)))

    @property
    def energy_share(self) -> dict[str, float]:
        """Share of the reference full-tile MVM energy in each term (the target's [cost] share_*)."""
        return dict(self.share)

    # ---- bit scalings -------------------------------------------------------------------------------
    @property
    def input_window(self) -> float:
        """PWM input window relative to the reference: 2^(b-1) unit steps (HERMES 8-bit PWM inputs)."""
        return 2.0 ** (self.dac_bits - 1) / 2.0 ** (self.ref_dac_bits - 1)

    @property
    def adc_scale(self) -> float:
        """ADC conversion energy and time relative to the reference: ~ 2^bits (CCO count, Walden FOM)."""
        return 2.0 ** self.adc_bits / 2.0 ** self.ref_adc_bits

    # ---- energy -------------------------------------------------------------------------------------
    def coefficients_pj(self) -> dict[str, float]:
        """Energy per cell driven, per DAC conversion, per ADC conversion, per output (digital), pJ, at
        the costed bits."""
        s, E = self.energy_share, self.energy_ref_pj
        return {"cell": s["array"] * E / (self.ref_rows * self.ref_cols) * self.input_window,
                "dac_conversion": s["dac"] * E / self.ref_rows * self.input_window,
                "adc_conversion": s["adc"] * E / self.ref_cols * self.adc_scale,
                "digital_per_output": s["digital"] * E / self.ref_cols}

    def block_energy_pj(self, rows: int, cols: int) -> dict[str, float]:
        """Energy of one MVM of a block of ``rows`` x ``cols`` (the cells it uses), by term, pJ."""
        return self.energy_pj(cells=rows * cols, dac_conversions=rows, adc_conversions=cols)

    def energy_pj(self, cells: float, dac_conversions: float, adc_conversions: float) -> dict[str, float]:
        """Energy of any number of cells driven and conversions (digital work follows the ADC outputs)."""
        c = self.coefficients_pj()
        return {"array": c["cell"] * cells, "dac": c["dac_conversion"] * dac_conversions,
                "adc": c["adc_conversion"] * adc_conversions,
                "digital": c["digital_per_output"] * adc_conversions}

    # ---- latency ------------------------------------------------------------------------------------
    def mvm_latency_ns(self) -> dict[str, float]:
        """Time of one tile MVM: PWM integration + ADC conversion (+ their sum as ``mvm``), ns."""
        a = self.adc_time_share
        integration = (1.0 - a) * self.latency_ref_ns * self.input_window
        conversion = a * self.latency_ref_ns * self.adc_scale
        return {"integration": integration, "adc_conversion": conversion, "mvm": integration + conversion}

    # ---- what the report states ---------------------------------------------------------------------
    def describe(self, rows: int, cols: int) -> dict[str, Any]:
        """The report's ``cost_model`` object for tiles of ``rows`` x ``cols``."""
        full = self.block_energy_pj(rows, cols)
        shares = ", ".join(f"{k} {100 * v:g} %" for k, v in self.share)
        return {
            "energy_per_mvm_pj": self.energy_ref_pj,
            "latency_per_mvm_ns": self.latency_ref_ns,
            "reference": {"rows": self.ref_rows, "cols": self.ref_cols, "dac_bits": self.ref_dac_bits,
                          "adc_bits": self.ref_adc_bits},
            "costed_bits": {"dac": self.dac_bits, "adc": self.adc_bits},
            "energy_share_at_reference": self.energy_share,
            "adc_time_share": self.adc_time_share,
            "coefficients_pj": {k: round(v, 9) for k, v in self.coefficients_pj().items()},
            "full_tile_mvm_pj": round(sum(full.values()), 6),
            "mvm_latency_ns": {k: round(v, 6) for k, v in self.mvm_latency_ns().items()},
            "formula": ("E_block = cell*r*c + dac*r + adc*c + digital*c (coefficients_pj, r x c = the "
                        "block's rows x cols); t_mvm = integration + adc_conversion; per inference: "
                        "sum over layers of mvms_per_inference x (sum of E_block over its blocks), "
                        "latency sum over layers of mvms_per_inference x t_mvm"),
            "assumption": ASSUMPTIONS.format(R=self.ref_rows, C=self.ref_cols, bd=self.ref_dac_bits,
                                             ba=self.ref_adc_bits, E=self.energy_ref_pj,
                                             T=self.latency_ref_ns, shares=shares, a=self.adc_time_share),
        }


def check_shares() -> None:
    """The default energy shares must sum to 1 (so a full reference MVM costs exactly the target's figure)."""
    if set(phys.COST_ENERGY_SHARE) != set(TERMS) or shares_error(phys.COST_ENERGY_SHARE) is not None:
        raise ValueError(f"COST_ENERGY_SHARE must have the terms {TERMS} summing to 1")


check_shares()
