"""Models written the way people already write them (the earlier PyTorch port, the JAX reference).

Each factory uses only the public API, with the calls exactly as users type them:
``sl.Sequential([...])``, ``sl.Dense(features=...)``, ``sl.LayerNorm(256)``,
``sl.Conv1D(in_ch, out_ch, kernel_size=3, padding="same")``,
``sl.LSTM(input_size=..., hidden_size=...)``, ``sl.Embedding(vocab, dim)``,
``sl.Softmax(axis=-1)``, ``sl.ReLU()`` and
``sl.attention.DotProductSelfAttention(input_size=..., num_heads=..., units_per_head=...,
max_future_horizon=...)``.
"""

from __future__ import annotations

import sl


def transformer_block(
    d_model: int = 64, num_heads: int = 4, d_ff: int = 256, past: int = 16, future: int = 2
) -> sl.SequenceLayer:
    """A pre-norm transformer block with lookahead: attention sees ``past`` steps back and
    ``future`` ahead; the residual shortcut is delayed by ``future`` steps to line up when streaming."""
    attention = sl.Sequential(
        [
            sl.LayerNorm(d_model),
            sl.attention.DotProductSelfAttention(
                input_size=d_model,
                num_heads=num_heads,
                units_per_head=d_model // num_heads,
                max_past_horizon=past,
                max_future_horizon=future,
            ),
            sl.DenseShaped((num_heads, d_model // num_heads), d_model),
        ]
    )
    feed_forward = sl.Sequential(
        [sl.LayerNorm(d_model), sl.Dense(features=d_ff, activation="relu"), sl.Dense(features=d_model)]
    )
    return sl.Sequential(
        [
            sl.Residual(attention, shortcut_layers=sl.Delay(future, delay_layer_output=False)),
            sl.Residual(feed_forward),
        ]
    )


def lstm_classifier(vocab: int = 100, dim: int = 32, hidden: int = 64, classes: int = 10) -> sl.SequenceLayer:
    """Token ids -> per-step class probabilities: Embedding -> LSTM -> Dense -> Softmax."""
    return sl.Sequential(
        [
            sl.Embedding(vocab, dim),
            sl.LSTM(input_size=dim, hidden_size=hidden),
            sl.Dense(features=classes),
            sl.Softmax(axis=-1),
        ]
    )


def conv_stack(in_ch: int = 40, channels: int = 64, layers: int = 3, padding: str = "causal") -> sl.SequenceLayer:
    """Conv1D -> ReLU -> LayerNorm, repeated. ``padding="causal"`` streams; ``"same"`` (centred
    windows, as in the reference) runs layer-wise only, and ``"reverse_causal"`` streams with
    two steps of latency per layer."""
    blocks: list[sl.SequenceLayer] = []
    for i in range(layers):
        blocks += [
            sl.Conv1D(in_ch if i == 0 else channels, channels, kernel_size=3, padding=padding),
            sl.ReLU(),
            sl.LayerNorm(channels),
        ]
    return sl.Sequential(blocks)
