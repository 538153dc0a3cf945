"""The inference rule's named settings, without torch (the pipeline's config checks them at
`snakemake -n`): the quantization schemes (massive.inference.quantize applies them) and the
interventions on the sinks' massive activations (massive.inference.window).

    >>> SCHEMES["a8_per_tensor_keep_massive"].label
    'int8 activations, per tensor, massive kept in float'
"""

from __future__ import annotations

from dataclasses import dataclass

SINK_INTERVENTIONS = ("mean", "zero")  # massive.inference.window: on the sinks' massive activations
GRANULARITIES = ("per_tensor", "per_token", "per_channel")


@dataclass(frozen=True)
class Scheme:
    """A quantization configuration: what (activation | weight), how many bits, which groups
    share a scale, and whether the massive activations (or super weights) are kept in float."""

    name: str
    target: str
    bits: int
    granularity: str
    keep: bool

    @property
    def label(self) -> str:
        """A readable name: "int8 activations, per tensor, massive kept in float"."""
        what = "activations" if self.target == "activation" else "weights"
        kept = {"activation": ", massive kept in float", "weight": ", super weight(s) kept in float"}[self.target]
        return f"int{self.bits} {what}, {self.granularity.replace('_', ' ')}{kept if self.keep else ''}"


def _schemes() -> dict[str, Scheme]:
    out = {}
    for bits in (8, 4):
        for gran in ("per_tensor", "per_token"):
            out[f"a{bits}_{gran}"] = Scheme(f"a{bits}_{gran}", "activation", bits, gran, False)
        out[f"a{bits}_per_tensor_keep_massive"] = Scheme(
            f"a{bits}_per_tensor_keep_massive", "activation", bits, "per_tensor", True
        )
        out[f"w{bits}_per_channel"] = Scheme(f"w{bits}_per_channel", "weight", bits, "per_channel", False)
        out[f"w{bits}_per_channel_keep_super"] = Scheme(
            f"w{bits}_per_channel_keep_super", "weight", bits, "per_channel", True
        )
    return out


SCHEMES = _schemes()
