"""The Gemma 3n-style streaming Conformer encoder (examples/gemma3n_audio_encoder.py): the reference
test's properties and parameter shapes, the contract at the reference's tolerances, and a live
stream (sl.Streamer, uneven chunks) equal to layer mode. Numerical agreement with the JAX reference
is checked by ``python examples/gemma3n_audio_encoder.py --reference`` in an environment with
sequence-layers (max difference ~4e-6 on outputs of magnitude ~2-5); this test stays JAX-free."""

from __future__ import annotations

import fractions
import itertools
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import gemma3n_audio_encoder as gemma

import sl
from sl.testing import assert_sequences_close, random_sequence, verify_contract

# The reference test's configuration (gemma3n_audio_encoder_test.py).
MODEL_DIM, HEADS, LAYERS, CHANNELS, BATCH = 5, 2, 3, 3, 2


def _model() -> sl.SequenceLayer:
    torch.manual_seed(0)
    return gemma.build(mel_bins=CHANNELS, model_dims=MODEL_DIM, num_layers=LAYERS, num_heads=HEADS).eval()


def test_properties_and_parameter_shapes_match_the_reference_test():
    model = _model()
    assert model.block_size == 16
    assert model.output_ratio == fractions.Fraction(1, 16)
    assert model.output_latency == 1
    assert model.supports_step
    assert model.get_output_spec(sl.ChannelSpec((CHANNELS,), torch.float32)).shape == (MODEL_DIM,)
    # The reference's variable shapes (its test), in torch layouts: Dense [out, in], Conv [out, in, *k],
    # DenseShaped [*out, *in]; the Repeat holds one copy per layer instead of a stacked leading axis.
    d, units = MODEL_DIM, MODEL_DIM // HEADS
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    feature = {
        "layers.0.layers.2.weight": (128, 1, 3, 3),
        "layers.0.layers.3.weight": (128,),
        "layers.0.layers.6.weight": (32, 128, 3, 3),
        "layers.0.layers.7.weight": (32,),
        "layers.0.layers.9.weight": (d, 1, 32),
    }
    block = {
        "layers.0.layers.0.weight": (d,),
        "layers.0.layers.1.weight": (4 * d, d),
        "layers.0.layers.2.weight": (d, 4 * d),
        "layers.0.layers.3.weight": (d,),
        "layers.1.layers.0.weight": (d,),
        "layers.1.layers.1.per_dim_scale": (units,),
        "layers.1.layers.1.input_projection.in_proj_weight": (3 * HEADS * units, d),
        "layers.1.layers.1.relative_position_embedding.pos_proj": (d, HEADS, units),
        "layers.1.layers.2.weight": (d, HEADS, units),
        "layers.1.layers.3.weight": (d,),
        "layers.2.layers.0.weight": (d,),
        "layers.2.layers.1.weight": (2 * d, d),
        "layers.2.layers.3.weight": (d, 1, 5),
        "layers.2.layers.4.weight": (d,),
        "layers.2.layers.6.weight": (d, d),
        "layers.3.layers.0.weight": (d,),
        "layers.3.layers.1.weight": (4 * d, d),
        "layers.3.layers.2.weight": (d, 4 * d),
        "layers.3.layers.3.weight": (d,),
        "layers.4.weight": (d,),
    }
    repeat = next(k for k in shapes if k.startswith("layers.1.")).split(".")[2]  # the Repeat's copies attribute
    expected = dict(feature)
    for i in range(LAYERS):
        expected.update({f"layers.1.{repeat}.{i}.{k}": v for k, v in block.items()})
    assert shapes == expected


def test_contract_at_the_reference_tolerances():
    model = _model()
    x = random_sequence(BATCH, 2 * model.block_size, CHANNELS, random_mask=True)
    y = verify_contract(model, x, training=False, rtol=1e-2, atol=1e-3)
    assert y.channel_shape == (MODEL_DIM,)


def test_live_stream_in_uneven_chunks_equals_layer_mode():
    model = _model()
    gen = torch.Generator().manual_seed(1)
    x = random_sequence(BATCH, 150, CHANNELS, generator=gen)
    with torch.no_grad():
        offline = model.layer(x)
    streamer = sl.Streamer(model, BATCH, x.channel_spec)
    cuts = [0, 7, 16, 19, 50, 64, 101, 150]
    chunks = [streamer.push(x[:, a:b]) for a, b in itertools.pairwise(cuts)]
    streamed = sl.Sequence.concatenate_sequences([*chunks, streamer.flush()])
    n = offline.values.shape[1]
    assert streamed.values.shape[1] >= n
    assert_sequences_close(streamed[:, :n], offline, rtol=1e-5, atol=1e-5)


def test_config_round_trip_rebuilds_the_encoder():
    model = _model()
    rebuilt = sl.from_config(json.loads(json.dumps(model.get_config())))
    rebuilt.load_state_dict(model.state_dict())
    x = random_sequence(BATCH, 48, CHANNELS, random_mask=True, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_sequences_close(rebuilt.eval().layer(x), model.layer(x), rtol=0, atol=0)


def test_default_delays_are_the_references():
    model = _model()
    feature, delays = model[0], [m.length for m in model.modules() if isinstance(m, sl.Delay)]
    assert delays == [0, 1, 2]  # -input_latency % 2, 1, 2 in the reference
    assert not any(d.delay_layer_output for d in model.modules() if isinstance(d, sl.Delay))
    assert isinstance(feature[2], sl.Conv2D) and isinstance(model[3], sl.Downsample1D)


def _front(latency: int) -> sl.SequenceLayer:
    """A streaming front end with ``latency`` steps of lookahead (as a feature extractor might have)."""
    return sl.Conv1D(CHANNELS, CHANNELS, kernel_size=latency + 1, padding="reverse_causal")


@pytest.mark.parametrize("latency", [1, 2, 3])
def test_input_latency_keeps_the_stream_aligned(latency):
    torch.manual_seed(0)
    encoder = gemma.build(mel_bins=CHANNELS, model_dims=MODEL_DIM, num_layers=1, num_heads=HEADS, input_latency=latency)
    model = sl.Serial([_front(latency), *encoder[0], *list(encoder)[1:]]).eval()
    assert model.output_latency == 1 and model.block_size == 16
    x = random_sequence(BATCH, 64, CHANNELS, random_mask=True, generator=torch.Generator().manual_seed(latency))
    verify_contract(model, x, training=False, rtol=1e-2, atol=1e-3, test_gradients=False)


@pytest.mark.parametrize("latency", [1, 3])
def test_encoder_after_a_front_end_with_latency_nested(latency):
    """As written, without flattening: the encoder's own Serials start their states from the
    latency in front of them (an encoder built for input_latency=1 cannot count from 0)."""
    torch.manual_seed(0)
    encoder = gemma.build(mel_bins=CHANNELS, model_dims=MODEL_DIM, num_layers=1, num_heads=HEADS, input_latency=latency)
    model = sl.Serial([_front(latency), encoder]).eval()
    assert model.output_latency == 1 and model.block_size == 16
    x = random_sequence(BATCH, 64, CHANNELS, random_mask=True, generator=torch.Generator().manual_seed(latency))
    verify_contract(model, x, training=False, rtol=1e-2, atol=1e-3, test_gradients=False)
