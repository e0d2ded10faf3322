"""A streaming Conformer audio encoder in the style of Gemma 3n (the reference's
``sequence_layers/jax/examples/gemma3n_audio_encoder.py``), built only from the public API.

Input: log-mel frames ``[batch, time, mel_bins]`` (Gemma 3n: 128 bins every 10 ms).
Output: ``[batch, time / 16, model_dims]`` (one frame per 160 ms), streaming with a latency
of one output frame. The stack, as in the reference:

* **Subsampling** (``feature``): the spectrogram as an image ``[B, T, F, 1]``, two
  ``Conv2D(kernel 3, stride 2)`` with ``reverse_causal`` time padding and ``same`` frequency
  padding (128 then 32 filters, no bias), each followed by a cumulative (causal, steppable)
  ``GroupNorm(1)`` without bias (eps 1e-3) and a ReLU; then a ``DenseShaped`` projection of
  ``[F / 4, 32]`` to ``model_dims``. A ``Delay(n, delay_layer_output=False)`` in front of each
  strided convolution only delays the *step-wise* input, so that the latency accumulated in
  front of it is a multiple of its stride; layer-wise it is an identity.
* **Conformer blocks** (``Repeat`` of ``num_layers``), each:
  half-step FFN (``RMSNorm, Dense(4d, swish), Dense(d), RMSNorm, Scale(0.5)`` in a residual);
  local self-attention (``RMSNorm``, ``LocalDotProductSelfAttention`` with a combined QKV
  projection, query blocks of 12, 12 past steps and no future (``left_context = 13``
  including the current step), logit soft cap 50, per-dimension query scale, Transformer-XL
  relative positions; a ``DenseShaped`` output projection, ``RMSNorm``) in a residual;
  the convolution module (``RMSNorm, Dense(2d), GLU, DepthwiseConv1D(kernel 5, causal),
  RMSNorm, Swish, Dense(d)``) in a residual; a second half-step FFN; a final ``RMSNorm``.
* **Reduction**: ``Delay(2, delay_layer_output=False)`` then ``Downsample1D(4)`` (keep every
  4th frame), and ``MaskInvalid``.

Deviation: the reference writes the delays as constants (``-input_latency % 2``, ``1``, ``2``),
which fit ``input_latency = 0``: after a front end of latency 1, for instance, its second
convolution rejects the accumulated latency (checked against sequence-layers 0.2). Here each delay is computed from the
latency accumulated so far (``get_accumulated_output_latency``): the same layers as the
reference for ``input_latency = 0`` (delays 0, 1 and 2), and step mode stays aligned for
any ``input_latency``.

Every layer has no bias, like the reference. Parameters are laid out so that
``sl.interop.load_flax_params`` loads the reference model's variables once the reference
scope names are mapped to positions (see :func:`reference_scope_names`).

Sizes: the reference's full model is ``build(**FULL_SIZE)``, i.e. ``build(mel_bins=128,
model_dims=1536, num_layers=12, num_heads=8, left_context=13)`` (681M parameters; build it
with ``device="meta"`` to inspect it without allocating). The defaults are tiny, for tests
and demos: ``build()`` is ``mel_bins=8, model_dims=16, num_layers=2, num_heads=2`` (52k
parameters).

    python examples/gemma3n_audio_encoder.py              # streams the small model in 100 ms chunks
    python examples/gemma3n_audio_encoder.py --reference  # agreement with the JAX reference
                                                          # (needs sequence-layers installed)
"""

from __future__ import annotations

import math
from typing import Any

import torch

import sl

CONV_STRIDE = 2
SUBSAMPLING_FILTERS = (128, 32)  # the reference's fixed subsampling widths
ATTENTION_BLOCK = 12
REDUCTION = 4

FULL_SIZE = {"mel_bins": 128, "model_dims": 1536, "num_layers": 12, "num_heads": 8, "left_context": 13}


def _ffn(d: int, residual_weight: float, compute_dtype: torch.dtype | None, **factory: Any) -> sl.SequenceLayer:
    return sl.Residual(
        [
            sl.RMSNorm(d, **factory),
            sl.Dense(d, 4 * d, bias=False, activation="swish", compute_dtype=compute_dtype, **factory),
            sl.Dense(4 * d, d, bias=False, compute_dtype=compute_dtype, **factory),
            sl.RMSNorm(d, **factory),
            sl.Scale(residual_weight),
        ]
    )


def _attention(
    d: int, num_heads: int, left_context: int, compute_dtype: torch.dtype | None, **factory: Any
) -> sl.SequenceLayer:
    units = d // num_heads
    past = left_context - 1
    return sl.Residual(
        [
            sl.RMSNorm(d, **factory),
            sl.attention.LocalDotProductSelfAttention(
                input_size=d,
                num_heads=num_heads,
                units_per_head=units,
                block_size=ATTENTION_BLOCK,
                max_past_horizon=past,
                max_future_horizon=0,
                input_projection="combined",
                bias=False,
                attention_logits_soft_cap=50.0,
                per_dim_scale=True,
                relative_position_embedding={
                    "kind": "TransformerXL",
                    "num_heads": num_heads,
                    "units_per_head": units,
                    "max_backward": past,
                    "max_forward": 0,
                    "position_bias_dim": d,
                    "bias": False,
                },
                compute_dtype=compute_dtype,
                **factory,
            ),
            sl.DenseShaped((num_heads, units), (d,), bias=False, compute_dtype=compute_dtype, **factory),
            sl.RMSNorm(d, **factory),
        ]
    )


def _conv_module(d: int, compute_dtype: torch.dtype | None, **factory: Any) -> sl.SequenceLayer:
    return sl.Residual(
        [
            sl.RMSNorm(d, **factory),
            sl.Dense(d, 2 * d, bias=False, compute_dtype=compute_dtype, **factory),
            sl.GatedLinearUnit(),
            sl.DepthwiseConv1D(d, kernel_size=5, padding="causal", bias=False, compute_dtype=compute_dtype, **factory),
            sl.RMSNorm(d, **factory),
            sl.Swish(),
            sl.Dense(d, d, bias=False, compute_dtype=compute_dtype, **factory),
        ]
    )


def _aligned(latency: int, rate: int) -> sl.SequenceLayer:
    """``Delay(n, delay_layer_output=False)`` with the fewest steps that make the step-wise
    ``latency`` accumulated so far a multiple of the next layer's ``rate``."""
    return sl.Delay(-latency % rate, delay_layer_output=False)


def _subsampling(
    mel_bins: int, d: int, input_latency: int, compute_dtype: torch.dtype | None, **factory: Any
) -> sl.SequenceLayer:
    f0, f1 = SUBSAMPLING_FILTERS
    freq = math.ceil(math.ceil(mel_bins / CONV_STRIDE) / CONV_STRIDE)  # 'same' padding, stride 2, twice

    def conv(in_channels: int, out_channels: int) -> sl.SequenceLayer:
        return sl.Conv2D(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=CONV_STRIDE,
            time_padding="reverse_causal",
            spatial_padding="same",
            bias=False,
            compute_dtype=compute_dtype,
            **factory,
        )

    layers: list[sl.SequenceLayer] = [sl.ExpandDims(-1)]  # [B, T, F] -> [B, T, F, 1]
    latency = input_latency
    for c_in, c_out in ((1, f0), (f0, f1)):
        delay = _aligned(latency, CONV_STRIDE)
        block = [conv(c_in, c_out), sl.GroupNorm(1, c_out, eps=1e-3, cumulative=True, bias=False, **factory), sl.ReLU()]
        layers += [delay, *block]
        latency = sl.Serial([delay, *block]).get_accumulated_output_latency(latency)
    layers.append(sl.DenseShaped((freq, f1), (d,), bias=False, **factory))
    return sl.Serial(layers)


def build(
    mel_bins: int = 8,
    model_dims: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    left_context: int = 13,
    ffn_residual_weight: float = 0.5,
    input_latency: int = 0,
    compute_dtype: torch.dtype | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> sl.SequenceLayer:
    """The encoder (small by default; the reference's sizes are ``FULL_SIZE``).

    ``input_latency``: the ``output_latency`` of whatever runs in front of the encoder (a
    streaming feature extractor), so the alignment delays keep step mode equal to layer
    mode, as in the reference. ``compute_dtype``: matmuls and convolutions in this dtype
    (parameters stay ``dtype``, default float32). Attention heads have ``model_dims //
    num_heads`` units each (as in the reference, ``model_dims`` need not divide evenly).
    """
    factory = {"device": device, "dtype": dtype}
    d = model_dims
    block = sl.Serial(
        [
            _ffn(d, ffn_residual_weight, compute_dtype, **factory),
            _attention(d, num_heads, left_context, compute_dtype, **factory),
            _conv_module(d, compute_dtype, **factory),
            _ffn(d, ffn_residual_weight, compute_dtype, **factory),
            sl.RMSNorm(d, **factory),
        ]
    )
    feature = _subsampling(mel_bins, d, input_latency, compute_dtype, **factory)
    conformer = sl.Repeat(block, num_repeats=num_layers)
    latency = sl.Serial([feature, conformer]).get_accumulated_output_latency(input_latency)
    return sl.Serial(
        [
            feature,
            conformer,
            _aligned(latency, REDUCTION),
            sl.Downsample1D(REDUCTION),
            sl.MaskInvalid(),
        ]
    )


def reference_scope_names() -> dict[str, Any]:
    """The reference model's Flax scope names by position (``layers_<i>``/``child_layer`` in sl's
    converters), for renaming a reference variable tree before ``sl.interop.load_flax_params``:
    ``{scope: (position, children)}``."""
    ffn = {
        "pre_layer_norm": "layers_0",
        "ffn_layer1": "layers_1",
        "ffn_layer2": "layers_2",
        "post_layer_norm": "layers_3",
    }
    return {
        "feature": (
            "layers_0",
            {
                "subsampling_0": "layers_2",
                "norm_0": "layers_3",
                "subsampling_1": "layers_6",
                "norm_1": "layers_7",
                "input_proj": "layers_9",
            },
        ),
        "conformer": (
            "layers_1",
            {
                "stacked_layers": (
                    "child_layer",
                    {
                        "fflayer_start": ("layers_0", ffn),
                        "trans_atten": (
                            "layers_1",
                            {
                                "pre_norm": "layers_0",
                                "self_atten": "layers_1",
                                "post": "layers_2",
                                "post_norm": "layers_3",
                            },
                        ),
                        "lconv": (
                            "layers_2",
                            {
                                "ln": "layers_0",
                                "linear_start": "layers_1",
                                "depthwise_conv1d": "layers_3",
                                "conv_norm": "layers_4",
                                "linear_end": "layers_6",
                            },
                        ),
                        "fflayer_end": ("layers_3", ffn),
                        "final_ln": "layers_4",
                    },
                ),
            },
        ),
    }


def rename_reference_variables(tree: Any, names: Any = None) -> Any:
    """A reference variable tree (``{collection: {scope: ...}}`` or one collection) with its
    scope names replaced by the positions :func:`reference_scope_names` gives."""
    names = reference_scope_names() if names is None else names
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if key in names:
            target = names[key]
            if isinstance(target, tuple):
                out[target[0]] = rename_reference_variables(value, target[1])
            else:
                out[target] = value
        elif key in ("params", "batch_stats", "constants") or key.startswith("encoder"):
            out[key] = rename_reference_variables(value, names)
        else:
            out[key] = value
    return out


def compare_with_reference(
    mel_bins: int = 8,
    model_dims: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    batch: int = 2,
    time: int = 96,
    seed: int = 0,
) -> dict[str, float]:
    """Builds the reference model (JAX ``sequence-layers``) and this one with the same sizes,
    perturbs the reference's initial variables, loads them here with
    ``sl.interop.load_flax_params`` and returns the largest differences of the layer-wise and
    step-wise outputs on valid frames (needs an environment with ``sequence-layers``)."""
    import jax
    import numpy as np
    import sequence_layers.jax as slj
    from sequence_layers.jax import utils as ref_utils
    from sequence_layers.jax.examples import gemma3n_audio_encoder as ref

    reference = ref.Gemma3nAudioEncoderConfig(
        model_dims=model_dims, num_layers=num_layers, atten_num_heads=num_heads
    ).make()
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(batch, time, mel_bins)).astype(np.float32)
    lengths = [time] + [int(rng.integers(time // 2, time)) for _ in range(batch - 1)]
    mask = np.arange(time)[None, :] < np.asarray(lengths)[:, None]
    x_j = slj.Sequence(jax.numpy.asarray(values), jax.numpy.asarray(mask))
    variables = dict(reference.init(jax.random.PRNGKey(seed), x_j, training=False))
    leaves, treedef = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    # Perturb every parameter (norm scales away from 1) so that no layout error hides.
    leaves = [
        a + 0.2 * (float(np.std(a)) or 1.0) * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)
    ]
    variables["params"] = jax.tree.unflatten(treedef, leaves)
    bound = reference.bind(variables)

    model = build(mel_bins, model_dims, num_layers, num_heads).eval()
    sl.interop.load_flax_params(model, rename_reference_variables(jax.tree.map(np.asarray, variables)))

    x = sl.Sequence(torch.from_numpy(values), torch.from_numpy(mask))
    with torch.no_grad():
        ours_layer = model.layer(x)
        ours_step, _ = sl.step_by_step(model, x, align_latency=False)
    ref_layer = bound.layer(x_j, training=False)
    ref_step, _, _ = ref_utils.step_by_step_static(bound, x_j, training=False, with_emits=False)

    def diff(a: Any, b: sl.Sequence) -> float:
        a_mask = np.asarray(a.mask)
        if not np.array_equal(a_mask, b.mask.numpy()):
            raise AssertionError(f"masks differ: reference {a_mask.sum(1)} valid frames, ours {b.mask.sum(1)}")
        delta = np.abs(np.asarray(a.values) - b.values.numpy())[a_mask]
        return float(delta.max()) if delta.size else 0.0

    props = {
        name: (getattr(bound, name), getattr(model, name))
        for name in ("block_size", "output_ratio", "input_latency", "output_latency")
    }
    for name, (r, o) in props.items():
        if r != o:
            raise AssertionError(f"{name}: reference {r}, ours {o}")
    scale = float(np.abs(np.asarray(ref_layer.values)).max())
    return {
        "layer": diff(ref_layer, ours_layer),
        "step": diff(ref_step, ours_step),
        "output_max_abs": scale,
        "frames": float(ours_layer.mask.sum()),
    }


def main() -> None:
    import sys

    if "--reference" in sys.argv:
        for sizes in ({}, {"mel_bins": 3, "model_dims": 5, "num_layers": 3, "num_heads": 2}):
            print(sizes or "defaults", compare_with_reference(**sizes))
        return
    torch.manual_seed(0)
    model = build().eval()
    mel_bins = 8
    print(
        f"block_size={model.block_size}, output_ratio={model.output_ratio}, "
        f"output_latency={model.output_latency}, parameters={sum(p.numel() for p in model.parameters())}"
    )
    x = sl.random_sequence(1, 160, mel_bins)  # 1.6 s of 10 ms frames
    with torch.no_grad():
        offline = model.layer(x)
    streamer = sl.Streamer(model, 1, x.channel_spec)
    chunks = [streamer.push(x[:, t : t + 10]) for t in range(0, 160, 10)]  # 100 ms chunks
    streamed = sl.Sequence.concatenate_sequences([*chunks, streamer.flush()])
    diff = (streamed.values[:, : offline.values.shape[1]] - offline.values).abs().max()
    print(f"{offline.values.shape[1]} output frames; max |layer - step| = {float(diff):.2e}")


if __name__ == "__main__":
    main()
