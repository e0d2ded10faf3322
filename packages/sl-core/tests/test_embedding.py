"""Embedding, EmbeddingTranspose and OneHot (reference simple.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sl
from sl.layers import embedding as emb
from sl.testing import random_sequence, tolerances, verify_contract
from sl.testing.sequences import assert_sequences_close

DTYPES = [torch.float32, torch.bfloat16]


def _ids(batch: int, time: int, *channels: int, high: int, random_mask: bool = False) -> sl.Sequence:
    return random_sequence(batch, time, *channels, dtype=torch.int64, high=high, random_mask=random_mask)


# -- Embedding ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [(), (3,)])
@pytest.mark.parametrize("random_mask", [False, True])
def test_embedding_contract(dtype, channels, random_mask):
    layer = emb.Embedding(7, 4).to(dtype)
    x = _ids(3, 6, *channels, high=7, random_mask=random_mask)
    # Batching is checked below: the harness's garbage rows are out-of-range ids marked valid.
    y = verify_contract(layer, x, test_batching=False, **tolerances(dtype))
    assert y.dtype == dtype and y.channel_shape == (*channels, 4)
    assert layer.get_output_dtype(torch.int32) == dtype


def test_embedding_batch_independence():
    layer = emb.Embedding(7, 4)
    x = _ids(2, 5, high=7, random_mask=True)
    garbage = torch.full((1, 5), 6, dtype=torch.int64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    xb = sl.Sequence(torch.cat([garbage, x.values, garbage]), torch.cat([valid, x.mask, valid]))
    assert_sequences_close(layer.layer(xb)[1:3], layer.layer(x), rtol=0, atol=0)


def test_embedding_values_and_invalid_ids():
    layer = emb.Embedding(5, 3)
    values = torch.tensor([[0, 4, 2, 99], [3, -7, 1, 1]])
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    y = layer.layer(sl.Sequence(values, mask))  # out-of-range ids on invalid steps are fine
    w = layer.weight.detach()
    assert torch.equal(y.values[0, :3], w[[0, 4, 2]])
    assert torch.equal(y.values[1, [0, 2, 3]], w[[3, 1, 1]])
    assert torch.equal(y.mask, mask)
    assert type(y) is sl.Sequence  # id 0 is not the zero vector


def test_embedding_compute_dtype():
    layer = emb.Embedding(5, 3, compute_dtype=torch.bfloat16)
    assert layer.weight.dtype == torch.float32
    y = layer.layer(_ids(2, 4, high=5))
    assert y.dtype == torch.bfloat16
    assert layer.get_output_dtype(torch.int64) == torch.bfloat16
    layer64 = emb.Embedding(5, 3, dtype=torch.float64)
    assert layer64.layer(_ids(2, 4, high=5)).dtype == torch.float64


def test_embedding_reference_initializer():
    torch.manual_seed(0)
    layer = emb.Embedding(2000, 64)
    w = layer.weight.detach()
    # flax default_embed_init: variance 1/dimension, truncated normal within 2 (scaled) stddevs.
    assert abs(w.var().item() - 1 / 64) < 1e-3
    bound = 2 * math.sqrt(1 / 64) / 0.87962566103423978
    assert w.abs().max().item() <= bound + 1e-6
    assert abs(w.norm(dim=-1).mean().item() - 1.0) < 0.05


def test_embedding_step_compiles_without_sync():
    layer = emb.Embedding(7, 4)
    x = _ids(2, 5, high=7, random_mask=True)
    verify_contract(layer, x, test_batching=False, compile=True, compile_backend="aot_eager")


def test_embedding_bad_inputs():
    layer = emb.Embedding(5, 3)
    with pytest.raises(TypeError, match="Embedding expected an integer input dtype"):
        layer.layer(random_sequence(2, 4))
    with pytest.raises(TypeError, match="Embedding"):
        layer.step(random_sequence(2, 4), ())
    bad = sl.Sequence.from_values(torch.tensor([[1, 5, 2]]))
    with pytest.raises(ValueError, match=r"Embedding: expected ids in \[0, 5\)"):
        layer.layer(bad)
    with pytest.raises(ValueError, match="Embedding: expected ids"):
        layer.step(bad, ())
    with pytest.raises(ValueError, match="Embedding: expected ids"):
        layer.layer(sl.Sequence.from_values(torch.tensor([[-1]])))
    for args in ((0, 3), (5, 0), (-1, 3)):
        with pytest.raises(ValueError, match="Embedding"):
            emb.Embedding(*args)
    with pytest.raises(TypeError, match="Embedding"):
        emb.Embedding(5.0, 3)


def test_attend():
    layer = emb.Embedding(6, 4)
    q = random_sequence(2, 5, 4, random_mask=True)
    y = layer.attend(q)
    assert isinstance(y, sl.MaskedSequence) and y.channel_shape == (6,)
    torch.testing.assert_close(y.values, q.values @ layer.weight.detach().T)
    assert layer.attend(q, compute_dtype=torch.float64).dtype == torch.float64
    assert layer.attend(q, embedding_dtype=torch.bfloat16).dtype == torch.float32  # promoted with the query
    with pytest.raises(ValueError, match=r"Embedding.attend expected a query with channel shape \(\.\.\., 4\)"):
        layer.attend(random_sequence(2, 5, 3))


# -- EmbeddingTranspose ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("random_mask", [False, True])
def test_embedding_transpose_contract(dtype, use_bias, random_mask):
    layer = emb.EmbeddingTranspose(emb.Embedding(6, 4), bias=use_bias)
    if use_bias:
        with torch.no_grad():
            layer.bias.normal_()
    layer = layer.to(dtype)
    x = random_sequence(2, 5, 3, 4, dtype=dtype, random_mask=random_mask)
    y = verify_contract(layer, x, **tolerances(dtype))
    assert y.channel_shape == (3, 6) and y.dtype == dtype


def test_embedding_transpose_shares_weight():
    table = emb.Embedding(6, 4)
    head = emb.EmbeddingTranspose(table)
    assert head.embedding is table
    model = sl.Serial(table, head)
    assert {n for n, _ in model.named_parameters()} == {"layers.0.weight", "layers.1.bias"}
    with torch.no_grad():
        head.bias.copy_(torch.arange(6.0))
    q = random_sequence(2, 3, 4, random_mask=True)
    y = head.layer(q)
    torch.testing.assert_close(y.values, q.values @ table.weight.detach().T + torch.arange(6.0))
    # Gradients from the logits reach the shared table.
    y.values.sum().backward()
    assert table.weight.grad is not None
    # Tied round trip: ids -> embeddings -> logits.
    ids = _ids(2, 5, high=6)
    logits = model.layer(ids)
    assert logits.channel_shape == (6,)


def test_embedding_transpose_config_round_trip_unties():
    table = emb.Embedding(6, 4)
    head = emb.EmbeddingTranspose(table, bias=False)
    config = json.loads(json.dumps(head.get_config()))
    assert config["embedding"]["type"] == "Embedding"
    rebuilt = sl.from_config(config)
    assert isinstance(rebuilt, emb.EmbeddingTranspose) and rebuilt.bias is None
    assert rebuilt.embedding is not table  # a fresh, untied table (documented)
    assert rebuilt.get_config() == head.get_config()


def test_embedding_transpose_dtypes():
    table = emb.Embedding(6, 4, compute_dtype=torch.bfloat16)
    head = emb.EmbeddingTranspose(table)
    q = random_sequence(2, 3, 4)
    assert head.layer(q).dtype == torch.bfloat16 == head.get_output_dtype(torch.float32)
    head64 = emb.EmbeddingTranspose(emb.Embedding(6, 4), compute_dtype=torch.float64, dtype=torch.float64)
    assert head64.bias.dtype == torch.float64
    assert head64.layer(q).dtype == torch.float64


def test_embedding_transpose_bad_inputs():
    head = emb.EmbeddingTranspose(emb.Embedding(6, 4))
    with pytest.raises(ValueError, match=r"EmbeddingTranspose expected input channel shape \(\.\.\., 4\)"):
        head.layer(random_sequence(2, 3, 5))
    with pytest.raises(ValueError, match="EmbeddingTranspose"):
        head.get_output_shape(())
    with pytest.raises(TypeError, match="EmbeddingTranspose expected an sl Embedding"):
        emb.EmbeddingTranspose(emb.OneHot(3))


# -- OneHot ---------------------------------------------------------------------------


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("random_mask", [False, True])
def test_one_hot_contract(compute_dtype, random_mask):
    layer = emb.OneHot(5, compute_dtype=compute_dtype)
    x = _ids(3, 6, 2, high=5, random_mask=random_mask)
    y = verify_contract(layer, x, compile=compute_dtype == torch.float32, compile_backend="aot_eager")
    assert y.dtype == compute_dtype and y.channel_shape == (2, 5)


def test_one_hot_values():
    layer = emb.OneHot(3)
    x = sl.Sequence(
        torch.tensor([[0, 2, 1, 7, -1]], dtype=torch.int32), torch.tensor([[True, True, True, True, False]])
    )
    y = layer.layer(x)
    assert y.values[0].tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert type(y) is sl.Sequence and y.dtype == torch.float32
    assert torch.equal(y.mask, x.mask)


def test_one_hot_bad_inputs():
    for depth in (0, -3):
        with pytest.raises(ValueError, match="OneHot expects depth >= 1"):
            emb.OneHot(depth)
    with pytest.raises(TypeError, match="OneHot"):
        emb.OneHot(2.5)
    with pytest.raises(TypeError, match="OneHot expected an integer input dtype"):
        emb.OneHot(3).layer(random_sequence(2, 3))
    with pytest.raises(TypeError, match="OneHot"):
        emb.OneHot(3).layer(sl.Sequence.from_values(torch.ones(1, 2, dtype=torch.bool)))


def test_registry():
    for cls in (emb.Embedding, emb.EmbeddingTranspose, emb.OneHot):
        assert sl.registry.get(cls.__name__) is cls
        assert getattr(sl, cls.__name__) is cls
