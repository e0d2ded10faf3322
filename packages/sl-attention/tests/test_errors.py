"""Bad input gets a clear error naming the layer, what was expected and what arrived."""

from __future__ import annotations

import pytest
import torch

import sl
from sl_attention import (
    BlockwiseDotProductSelfAttention,
    DotProductAttention,
    DotProductSelfAttention,
    GmmAttention,
    LocalDotProductSelfAttention,
    MultiSourceDotProductAttention,
    ShawRelativePositionEmbedding,
    StreamingDotProductAttention,
    StreamingLocalDotProductAttention,
)


def _seq(b: int = 2, t: int = 5, d: int = 6) -> sl.Sequence:
    return sl.Sequence.from_values(torch.randn(b, t, d))


def test_heads_not_divisible_by_kv_heads():
    with pytest.raises(ValueError, match=r"DotProductSelfAttention: num_heads=6 must be divisible by num_kv_heads=4"):
        DotProductSelfAttention(6, 6, 3, 3, 0, num_kv_heads=4)


def test_combined_projection_refuses_grouped_heads_and_cross_attention():
    with pytest.raises(ValueError, match=r"combined .* needs num_kv_heads == num_heads.*num_kv_heads=2"):
        DotProductSelfAttention(6, 4, 3, 3, 0, num_kv_heads=2, input_projection="combined")
    with pytest.raises(ValueError, match=r"DotProductAttention attends to a separate source.*combined"):
        DotProductAttention(6, 2, 3, "source", input_projection="combined")
    with pytest.raises(ValueError, match=r"expects input_projection to be one of"):
        DotProductSelfAttention(6, 2, 3, 3, 0, input_projection="fused")
    # Grouped heads pick a projection that supports them by default.
    assert DotProductSelfAttention(6, 4, 3, 3, 0, num_kv_heads=2).projection_kind.value == "separate"


def test_missing_source_constant():
    layer = DotProductAttention(6, 2, 3, "encoder", 4)
    with pytest.raises(ValueError, match=r"DotProductAttention requires the constant 'encoder'.*constants given: \[\]"):
        layer.layer(_seq(), constants={})
    with pytest.raises(ValueError, match=r"requires the constant 'encoder'"):
        layer.get_initial_state(2, ((6,), torch.float32))
    with pytest.raises(ValueError, match=r"GmmAttention requires the constant 'encoder'"):
        GmmAttention(6, 2, 3, 2, "encoder", False).layer(_seq(), constants={"other": _seq()})


def test_source_with_another_batch_size():
    source = sl.Sequence.from_values(torch.randn(3, 7, 4))
    msg = r"constants\['source'\] has batch size 3, but the input has batch size 2"
    with pytest.raises(ValueError, match="DotProductAttention: " + msg):
        DotProductAttention(6, 2, 3, "source", 4).layer(_seq(), constants={"source": source})
    with pytest.raises(ValueError, match="DotProductAttention: " + msg):
        DotProductAttention(6, 2, 3, "source", 4).get_initial_state(
            2, ((6,), torch.float32), constants={"source": source}
        )
    with pytest.raises(ValueError, match="MultiSourceDotProductAttention: " + msg):
        MultiSourceDotProductAttention(6, 2, 3, "source", 4).layer(_seq(), constants={"source": source})
    with pytest.raises(ValueError, match="GmmAttention: " + msg):
        GmmAttention(6, 2, 3, 2, "source", True).layer(_seq(), constants={"source": source})
    with pytest.raises(ValueError, match="StreamingDotProductAttention: " + msg):
        StreamingDotProductAttention(6, 2, 3, "source", 2, 0, 4).layer(_seq(), constants={"source": source})


def test_source_not_a_sequence_or_wrong_rank():
    layer = DotProductAttention(6, 2, 3, "source", 4)
    with pytest.raises(ValueError, match=r"expects constants\['source'\] to be an sl.Sequence; got Tensor"):
        layer.layer(_seq(), constants={"source": torch.randn(2, 7, 4)})
    with pytest.raises(
        ValueError, match=r"DotProductAttention expected a key/value source of shape \[batch, time, 4\]"
    ):
        layer.layer(_seq(), constants={"source": sl.Sequence.from_values(torch.randn(2, 7, 5))})


def test_stepping_a_configuration_that_cannot_step_says_why():
    x = _seq()
    unbounded = DotProductSelfAttention(6, 2, 3, -1, 0)
    assert not unbounded.supports_step
    with pytest.raises(ValueError, match=r"DotProductSelfAttention cannot step: .*pass max_cache_length="):
        unbounded._step_impl(x, {}, False, None, False)
    with pytest.raises(ValueError, match=r"does not support step\(\)"):
        unbounded.step(x, {})
    future = DotProductSelfAttention(6, 2, 3, 3, -1)
    with pytest.raises(ValueError, match=r"max_future_horizon=-1 \(an unbounded future\) cannot stream"):
        future._step_impl(x, {}, False, None, False)
    with pytest.raises(ValueError, match=r"sl.step_by_step cannot run it"):
        sl.step_by_step(future, x)


def test_stepping_with_dropout_in_training():
    layer = DotProductSelfAttention(6, 2, 3, 3, 0, dropout=0.1)
    x = _seq()
    state = layer.get_initial_state(2, x.channel_spec, training=True)
    with pytest.raises(
        ValueError, match=r"DotProductSelfAttention.step does not support training=True with dropout=0.1"
    ):
        layer.step(x, state, training=True)


def test_bad_horizons_and_options():
    with pytest.raises(ValueError, match=r"max_past_horizon=0 and max_future_horizon=0"):
        DotProductSelfAttention(6, 2, 3, 0, 0)
    with pytest.raises(
        ValueError, match=r"expects max_past_horizon to be -1 \(unbounded\) or a non-negative int; got -2"
    ):
        DotProductSelfAttention(6, 2, 3, -2, 0)
    with pytest.raises(TypeError, match=r"expects max_future_horizon to be an int; got float"):
        DotProductSelfAttention(6, 2, 3, 2, 1.5)
    with pytest.raises(ValueError, match=r"max_cache_length preallocates .* max_past_horizon=3"):
        DotProductSelfAttention(6, 2, 3, 3, 0, max_cache_length=10)
    with pytest.raises(ValueError, match=r"LocalDotProductSelfAttention expects max_past_horizon >= 1"):
        LocalDotProductSelfAttention(6, 2, 3, 4, 0, 2)
    with pytest.raises(ValueError, match=r"attention_logits_soft_cap to be None or non-negative; got -1.0"):
        DotProductSelfAttention(6, 2, 3, 2, 0, attention_logits_soft_cap=-1.0)
    with pytest.raises(ValueError, match=r"use either num_sink_embeddings or use_sink_scalars"):
        DotProductSelfAttention(6, 2, 3, 2, 0, num_sink_embeddings=1, use_sink_scalars=True)
    with pytest.raises(ValueError, match=r"zero_fully_masked and attention sinks are incompatible"):
        DotProductSelfAttention(6, 2, 3, 2, 0, num_sink_embeddings=1, zero_fully_masked=True)
    with pytest.raises(ValueError, match=r"dropout \(on the attention probabilities\) in \[0, 1\]; got 1.5"):
        DotProductSelfAttention(6, 2, 3, 2, 0, dropout=1.5)
    with pytest.raises(ValueError, match=r"query_network must have output_ratio 1 and block_size 1"):
        DotProductSelfAttention(6, 2, 4, 2, 0, query_network=sl.Downsample1D(2))
    with pytest.raises(ValueError, match=r"relative_position_embedding ShawRelativePositionEmbedding has num_heads=3"):
        DotProductSelfAttention(6, 2, 4, 2, 0, relative_position_embedding=ShawRelativePositionEmbedding(2, 0, 3, 4))
    with pytest.raises(ValueError, match=r"kind 'Rotary'; expected one of"):
        DotProductSelfAttention(6, 2, 4, 2, 0, relative_position_embedding={"kind": "Rotary"})


def test_wrong_input_channels():
    layer = DotProductSelfAttention(6, 2, 3, 2, 0)
    with pytest.raises(
        ValueError, match=r"DotProductSelfAttention expects inputs \[batch, time, 6\].*got channel shape \(5,\)"
    ):
        layer.layer(_seq(d=5))
    with pytest.raises(ValueError, match=r"DotProductSelfAttention expects inputs \[batch, time, 6\]"):
        layer.get_initial_state(2, ((5,), torch.float32))


def test_streaming_source_block_must_match_input_block():
    layer = StreamingDotProductAttention(6, 2, 3, "source", 2, 0, 4)
    x = _seq(t=2)
    src = sl.Sequence.from_values(torch.randn(2, 5, 4))
    state = layer.get_initial_state(2, x.channel_spec, constants={"source": src})
    with pytest.raises(
        ValueError, match=r"step expects the source block .* to have as many steps as the input block \(2\); got 5"
    ):
        layer.step(x, state, constants={"source": src})


def test_streaming_local_source_must_be_as_long_as_the_input():
    # The reference's local layer mode asserts equal lengths; sl used to fall back silently.
    layer = StreamingLocalDotProductAttention(6, 2, 3, "source", 3, 2, 1, 4)
    for length in (3, 8):
        src = sl.Sequence.from_values(torch.randn(2, length, 4))
        with pytest.raises(
            ValueError,
            match=rf"StreamingLocalDotProductAttention expects the source constants\['source'\] to have as many "
            rf"steps as the input \(5\).*got {length}",
        ):
            layer.layer(_seq(), constants={"source": src})
    # The non-local layer attends across lengths, as the reference does.
    src = sl.Sequence.from_values(torch.randn(2, 8, 4))
    y = StreamingDotProductAttention(6, 2, 3, "source", 2, 1, 4).layer(_seq(), constants={"source": src})
    assert y.values.shape == (2, 5, 2, 3)


@pytest.mark.parametrize("arg", ["query_scale", "attention_logits_soft_cap"])
@pytest.mark.parametrize("value", ["0.5", True, float("nan"), float("inf")])
def test_scale_options_must_be_numbers(arg, value):
    kind = TypeError if isinstance(value, (str, bool)) else ValueError
    with pytest.raises(kind, match=rf"DotProductSelfAttention expects {arg} to be (None or )?a (finite )?number; got"):
        DotProductSelfAttention(6, 2, 3, 2, 0, **{arg: value})
    with pytest.raises(kind, match=rf"DotProductAttention expects {arg} to be (None or )?a (finite )?number; got"):
        DotProductAttention(6, 2, 3, "source", 4, **{arg: value})


def test_blockwise_latency_must_be_a_multiple_of_the_block():
    with pytest.raises(ValueError, match=r"latency of 1 is not a multiple of block_size=3.*sl.Delay\(2"):
        sl.Serial(
            sl.Delay(1, delay_layer_output=False), BlockwiseDotProductSelfAttention(6, 3, 2, 3, 1, 0)
        ).get_initial_state(1, ((6,), torch.float32))


def test_multi_source_options():
    with pytest.raises(ValueError, match=r"needs a segment id constant for every source"):
        MultiSourceDotProductAttention(
            6, 2, 3, ["a", "b"], query_segment_ids_name="q", source_segment_ids_names=["a_ids", None]
        )
    with pytest.raises(ValueError, match=r"source_segment_ids_names has 1 entries for 2 sources"):
        MultiSourceDotProductAttention(6, 2, 3, ["a", "b"], source_segment_ids_names=["x"])
    with pytest.raises(ValueError, match=r"expects every source with 4 channels"):
        MultiSourceDotProductAttention(6, 2, 3, ["a", "b"], 4).layer(
            _seq(),
            constants={
                "a": sl.Sequence.from_values(torch.randn(2, 3, 4)),
                "b": sl.Sequence.from_values(torch.randn(2, 3, 5)),
            },
        )


def test_compute_dtype_must_be_a_floating_torch_dtype():
    with pytest.raises(TypeError, match=r"DotProductSelfAttention expects compute_dtype to be None or a torch.dtype"):
        DotProductSelfAttention(6, 2, 3, 2, 0, compute_dtype="float32")
    with pytest.raises(ValueError, match=r"DotProductAttention expects compute_dtype to be a floating dtype"):
        DotProductAttention(6, 2, 3, "source", 4, compute_dtype=torch.int32)
