"""Parity cases for sl-recurrent (LSTM, RGLRU) against sequence_layers.jax.

LSTM: random non-contiguous masks and length masks, multi-step blocks, no bias, non-default
activations (sl's loop path) and a long sequence; both sides carry the state through invalid
steps. RGLRU: real and complex, several head counts, ``min_rad``, multi-step blocks, on length
masks (left-aligned: the only masks the reference documents as correct). On random masks sl
holds the state through invalid steps while the reference decays it, a deliberate difference
(documented as such below; ``packages/sl-recurrent/tests/test_rglru.py`` checks sl against the
reference's recurrence applied to each row's valid steps).
"""

from __future__ import annotations

from typing import Any

from common import Config, LayerCase, ours, ref

NO_REFERENCE: dict[str, str] = {
    "GRU": "not in sequence_layers.jax (the TF version wraps Keras cells); tests compare it with torch.nn.GRU",
    "VanillaRNN": "not in sequence_layers.jax (the TF version wraps Keras cells); tests compare it with torch.nn.RNN",
    "RNN": "the TF version's RNN(keras cell) wrapper; JAX has none; tests compare it with torch's cells",
}

RGLRU_COMPLEX = (
    "reference bug: with only_real=False in float32 the reference's scan casts the complex inputs to its float32 "
    "accumulator (recurrentgemma get_acc_dtype with a complex h0), dropping every imaginary part, so it computes "
    "h = Re(a) h + Re(b) and outputs zeros in the imaginary half (checked: equal to that real recurrence within "
    "1.2e-7); with a bfloat16 compute dtype it raises (complex_lib.Complex times a jax complex). sl computes the "
    "complex recurrence the layer describes (tests/test_rglru.py checks it against a complex128 oracle)"
)

RGLRU_HOLDS_STATE = (
    "by design: on masks with holes sl carries the RG-LRU state through invalid steps (any mask is "
    "correct); the reference decays it there (it documents only left-aligned masks as correct). "
    "They agree on length masks (the other RGLRU rows)"
)


def _jax(name: str) -> Any:
    def build() -> Any:
        import jax

        return getattr(jax.nn, name)

    build.__name__ = "build"
    return build


def _lstm() -> LayerCase:
    return LayerCase(
        "LSTM",
        [
            Config("3->5, random mask", ref("LSTM", units=5), ours("LSTM", 3, 5), (3,)),
            Config("3->5, lengths", ref("LSTM", units=5), ours("LSTM", 3, 5), (3,), random_mask=False),
            Config("4->6, 3 blocks per step", ref("LSTM", units=6), ours("LSTM", 4, 6), (4,), blocks_per_step=3),
            Config("4->3, no bias", ref("LSTM", units=3, use_bias=False), ours("LSTM", 4, 3, bias=False), (4,)),
            Config(
                "3->4, softsign/hard activations (loop path)",
                ref("LSTM", units=4, activation=_jax("soft_sign"), recurrent_activation=_jax("sigmoid")),
                ours("LSTM", 3, 4, activation="softsign"),
                (3,),
            ),
            Config(
                "8->8, T=64, random mask",
                ref("LSTM", units=8),
                ours("LSTM", 8, 8),
                (8,),
                time=64,
                rtol=1e-4,
                atol=1e-5,
            ),
        ],
        group="recurrent",
    )


def _rglru() -> LayerCase:
    configs = [
        Config(
            "8 units, 2 heads, lengths",
            ref("RGLRU", units=8, num_heads=2),
            ours("RGLRU", 8, 2),
            (8,),
            random_mask=False,
        ),
        Config(
            "6 units, 1 head, lengths, 2 blocks per step",
            ref("RGLRU", units=6, num_heads=1),
            ours("RGLRU", 6, 1),
            (6,),
            random_mask=False,
            blocks_per_step=2,
        ),
        Config(
            "12 units, 4 heads, min_rad 0.5, lengths, 3 blocks per step",
            ref("RGLRU", units=12, num_heads=4, min_rad=0.5),
            ours("RGLRU", 12, 4, min_rad=0.5),
            (12,),
            random_mask=False,
            blocks_per_step=3,
        ),
        Config(
            "complex 8 units, 2 heads, lengths",
            ref("RGLRU", units=8, num_heads=2, only_real=False),
            ours("RGLRU", 8, 2, only_real=False),
            (8,),
            random_mask=False,
            known_difference=RGLRU_COMPLEX,
            known_scope=("layer", "step"),
        ),
        Config(
            "complex 12 units, 3 heads, lengths, 2 blocks per step",
            ref("RGLRU", units=12, num_heads=3, only_real=False, min_rad=0.8),
            ours("RGLRU", 12, 3, only_real=False, min_rad=0.8),
            (12,),
            random_mask=False,
            blocks_per_step=2,
            known_difference=RGLRU_COMPLEX,
            known_scope=("layer", "step"),
        ),
        Config(
            "8 units, linear scan, T=64, lengths",
            ref("RGLRU", units=8, num_heads=2, scan_type="linear_native"),
            ours("RGLRU", 8, 2, scan_type="linear"),
            (8,),
            random_mask=False,
            time=64,
        ),
        # An empty input with the linear scan (sl once indexed step 0 of it; found by fuzzing). The
        # reference's step_by_step_static fails on 0 steps (it concatenates no blocks): layer only.
        Config(
            "8 units, linear scan, empty input",
            ref("RGLRU", units=8, num_heads=2, scan_type="linear_native"),
            ours("RGLRU", 8, 2, scan_type="linear"),
            (8,),
            random_mask=False,
            time=0,
            check_step=False,
        ),
        Config(
            "8 units, 2 heads, random mask",
            ref("RGLRU", units=8, num_heads=2),
            ours("RGLRU", 8, 2),
            (8,),
            known_difference=RGLRU_HOLDS_STATE,
            known_scope=("layer", "step"),
        ),
        Config(
            "complex, random mask",
            ref("RGLRU", units=8, num_heads=2, only_real=False),
            ours("RGLRU", 8, 2, only_real=False),
            (8,),
            known_difference=RGLRU_HOLDS_STATE + "; and " + RGLRU_COMPLEX,
            known_scope=("layer", "step"),
        ),
    ]
    return LayerCase("RGLRU", configs, group="recurrent")


def cases() -> list[LayerCase]:
    return [_lstm(), _rglru()]
