"""Composition rules: block size, output ratio, latency and receptive field of stacks.

These follow the reference exactly (``sequence_layers/jax/utils.py``): block sizes
compose through an lcm rule, ratios multiply, latencies accumulate (with the
divisibility error that asks for a ``Delay``), and per-step receptive fields are
propagated backwards through each layer using the step-relative convention.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Mapping
from collections.abc import Sequence as TypingSequence
from typing import TYPE_CHECKING

from sl.types import ReceptiveField

if TYPE_CHECKING:
    from sl.layer import SequenceLayer

__all__ = [
    "aggregate_receptive_field_per_steps",
    "get_required_stepwise_delay",
    "propagate_receptive_field_to_prev_layer",
    "receptive_field_at",
    "receptive_field_per_step_of_serial_layers",
    "receptive_field_union",
    "reduce_receptive_field_per_step",
    "serial_block_size",
    "serial_input_latency",
    "serial_output_latency",
    "serial_output_ratio",
    "validate_receptive_field",
    "validate_receptive_field_per_step",
]

INF = math.inf


def validate_receptive_field(rf: ReceptiveField) -> None:
    if rf is None:
        return
    if not isinstance(rf, tuple) or len(rf) != 2:
        raise ValueError(f"A receptive field is a (start, end) tuple or None; got {rf!r}.")
    start, end = rf
    if start > end:
        raise ValueError(f"Receptive field start must not exceed end; got {rf!r}.")
    if start == INF or end == -INF:
        raise ValueError(f"Receptive field {rf!r} has an impossible infinite bound.")


def validate_receptive_field_per_step(rf_per_step: Mapping[int, ReceptiveField]) -> None:
    if not isinstance(rf_per_step, Mapping) or not rf_per_step:
        raise ValueError(f"receptive_field_per_step must be a non-empty dict; got {rf_per_step!r}.")
    if sorted(rf_per_step) != list(range(len(rf_per_step))):
        raise ValueError(f"receptive_field_per_step keys must be 0..n-1; got {sorted(rf_per_step)}.")
    for rf in rf_per_step.values():
        validate_receptive_field(rf)


def receptive_field_union(a: ReceptiveField, b: ReceptiveField) -> ReceptiveField:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]))


def reduce_receptive_field_per_step(rf_per_step: Mapping[int, ReceptiveField]) -> ReceptiveField:
    """The union of the per-step receptive fields (None if every step has none)."""
    validate_receptive_field_per_step(rf_per_step)
    out: ReceptiveField = None
    for rf in rf_per_step.values():
        out = receptive_field_union(out, rf)
    return out


def receptive_field_at(
    rf_per_step: Mapping[int, ReceptiveField], output_ratio: fractions.Fraction, output_step: int
) -> ReceptiveField:
    """The absolute input range seen by ``output_step`` of a layer."""
    rf = rf_per_step[output_step % len(rf_per_step)]
    if rf is None:
        return None
    shift = math.floor(fractions.Fraction(output_step) / output_ratio)
    return (rf[0] + shift, rf[1] + shift)


def aggregate_receptive_field_per_steps(
    rf_per_steps: TypingSequence[Mapping[int, ReceptiveField]],
) -> dict[int, ReceptiveField]:
    """Per-step union over several layers fed the same input (Parallel)."""
    out: dict[int, ReceptiveField] = {}
    n = math.lcm(*[len(r) for r in rf_per_steps]) if rf_per_steps else 1
    for rf_per_step in rf_per_steps:
        validate_receptive_field_per_step(rf_per_step)
        for step in range(n):
            out[step] = receptive_field_union(out.get(step), rf_per_step[step % len(rf_per_step)])
    return out


def propagate_receptive_field_to_prev_layer(
    rf_next: Mapping[int, ReceptiveField],
    rf_prev: Mapping[int, ReceptiveField],
    ratio_prev: fractions.Fraction,
    ratio_next: fractions.Fraction = fractions.Fraction(1),
) -> dict[int, ReceptiveField]:
    """Per-step receptive field of ``Serial([prev, next])`` (next may be a composite)."""
    composed = ratio_prev * ratio_next
    out: dict[int, ReceptiveField] = {}
    for step, rf in rf_next.items():
        if rf is None:
            out[step] = None
            continue
        offset = math.floor(fractions.Fraction(step) / ratio_next)
        start, end = rf[0] + offset, rf[1] + offset
        fields: list[ReceptiveField] = []
        if start == -INF and end == INF:
            fields.append((-INF, INF))
        else:
            if start == -INF:
                fields.append((-INF, -INF))
            if end == INF:
                fields.append((INF, INF))
            lo = int(start if start != -INF else end)
            hi = int(end + 1 if end != INF else start + 1)
            fields.extend(receptive_field_at(rf_prev, ratio_prev, i) for i in range(lo, hi))
        fields = [f for f in fields if f is not None]
        if not fields:
            out[step] = None
            continue
        s = min(f[0] for f in fields)  # type: ignore[index]
        e = max(f[1] for f in fields)  # type: ignore[index]
        shift = math.floor(fractions.Fraction(step) / composed)
        out[step] = (s - shift, e - shift)
    return out


def receptive_field_per_step_of_serial_layers(layers: TypingSequence[SequenceLayer]) -> dict[int, ReceptiveField]:
    if not layers:
        return {0: (0, 0)}
    per_step = [layer.receptive_field_per_step for layer in layers]
    ratios = [layer.output_ratio for layer in layers]
    # The composite repeats with a period (in output steps) that every layer's phases and
    # floor(step / ratio) mappings divide. The reference takes only the lcm of the dict
    # lengths, which misses phases of stacked upsamplers (Upsample(2) twice has period 4).
    n = 1
    downstream = fractions.Fraction(1)
    for layer_rf, ratio in zip(reversed(per_step), reversed(ratios)):
        n = math.lcm(n, math.lcm(len(layer_rf), ratio.numerator) * downstream.numerator)
        downstream *= ratio
    rf: dict[int, ReceptiveField] = dict.fromkeys(range(n), (0, 0))
    acc = fractions.Fraction(1)
    for ratio, layer_rf in zip(reversed(ratios), reversed(per_step)):
        rf = propagate_receptive_field_to_prev_layer(rf, layer_rf, ratio, acc)
        acc *= ratio
    return rf


def serial_block_size(layers: TypingSequence[SequenceLayer]) -> int:
    """Smallest input block that gives every layer a whole number of its blocks.

    Integer arithmetic (the ratio so far as ``num / den``): this runs on every ``step``
    of a stack, where ``fractions.Fraction`` would dominate the Python overhead.
    """
    block, num, den = 1, 1, 1
    for layer in layers:
        # Upstream outputs per block (always an integer by construction).
        produced, rem = divmod(block * num, den)
        if rem:
            raise ValueError(f"Serial block size is not an integer at {type(layer).__name__}.")
        block, rem = divmod(math.lcm(produced, layer.block_size) * den, num)
        if rem:
            raise ValueError(f"Serial block size is not an integer at {type(layer).__name__}.")
        ratio = layer.output_ratio
        num, den = num * ratio.numerator, den * ratio.denominator
        g = math.gcd(num, den)
        num, den = num // g, den // g
    return block


def serial_output_ratio(layers: TypingSequence[SequenceLayer]) -> fractions.Fraction:
    num, den = 1, 1
    for layer in layers:
        ratio = layer.output_ratio
        num, den = num * ratio.numerator, den * ratio.denominator
    return fractions.Fraction(num, den)


def serial_input_latency(layers: TypingSequence[SequenceLayer], input_latency: int = 0) -> int:
    for layer in reversed(layers):
        input_latency = layer.get_accumulated_input_latency(input_latency)
    return input_latency


def serial_output_latency(layers: TypingSequence[SequenceLayer], output_latency: int = 0) -> int:
    for layer in layers:
        output_latency = layer.get_accumulated_output_latency(output_latency)
    return output_latency


def get_required_stepwise_delay(output_latency: int, output_ratio: fractions.Fraction) -> int:
    """The Delay needed before a resampling layer so its incoming latency divides evenly."""
    return int(-output_latency % (1 / output_ratio))
