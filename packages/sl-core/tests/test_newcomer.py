"""What a newcomer writes first: a token model built from registry names, run both ways."""

import json

import torch

import sl
from sl.testing import assert_sequences_close, random_sequence, verify_contract


def build_model() -> sl.SequenceLayer:
    Embedding = sl.registry.get("Embedding")
    Dense = sl.registry.get("Dense")
    ReLU = sl.ReLU  # alias resolves through the registry too
    Softmax = sl.registry.get("core:Softmax")
    return sl.Serial(
        Embedding(num_embeddings=50, dimension=16),
        Dense(16, 32),
        ReLU(),
        Dense(32, 50),
        Softmax(),
    )


def test_token_model_layer_and_step_agree():
    torch.manual_seed(0)
    model = build_model().eval()
    ids = random_sequence(3, 11, dtype=torch.int64, high=50)
    y = model.layer(ids)
    assert y.shape == (3, 11, 50)
    assert y.dtype == torch.float32
    probs = y.values[ids.mask]
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[0]))

    y_steps, _ = sl.step_by_step(model, ids)
    assert_sequences_close(y, y_steps, rtol=1e-6, atol=1e-6)

    # A live stream: one token at a time with explicit state.
    state = model.get_initial_state(3, ids.channel_spec)
    outputs = []
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t : t + 1], state)
        outputs.append(out)
    assert_sequences_close(y, sl.Sequence.concatenate_sequences(outputs), rtol=1e-6, atol=1e-6)

    # Module call = layer() in the module's mode.
    assert_sequences_close(model(ids), y)
    # In-range garbage rows are the right batching check for an id model.
    verify_contract(model, ids, test_batching=False, rtol=1e-5, atol=1e-6)


def test_token_model_config_round_trip_and_weights():
    model = build_model()
    config = model.get_config()
    assert [c["type"] for c in config["layers"]] == ["Embedding", "Dense", "Relu", "Dense", "Softmax"]
    rebuilt = sl.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    rebuilt.load_state_dict(model.state_dict())
    ids = random_sequence(2, 5, dtype=torch.int64, high=50)
    assert_sequences_close(model.layer(ids), rebuilt.layer(ids), rtol=0, atol=0)


def test_token_model_metadata():
    model = build_model()
    assert model.block_size == 1
    assert model.output_ratio == 1
    assert model.input_latency == model.output_latency == 0
    assert model.receptive_field == (0, 0)
    assert model.supports_step
