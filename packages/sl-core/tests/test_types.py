"""Sequence / MaskedSequence: API, bad input, pytree registration, compile and export."""

from __future__ import annotations

import io

import pytest
import torch
import torch.utils._pytree as pytree

import sl
from sl.testing import assert_sequences_equal, random_sequence
from sl.types import ChannelSpec, MaskedSequence, PaddingMode, Sequence, sequence_mask


def _seq(b=2, t=5, *c, lengths=None):
    values = torch.arange(b * t * max(1, int(torch.tensor(c).prod()) if c else 1), dtype=torch.float32)
    values = values.reshape(b, t, *c) + 1.0
    if lengths is None:
        lengths = [t] + [max(0, t - 2)] * (b - 1)
    return Sequence.from_lengths(values, list(lengths))


# -- construction and bad input ------------------------------------------------------------------


def test_metadata():
    x = _seq(2, 5, 3)
    assert x.shape == (2, 5, 3) and x.ndim == 3 and x.dtype == torch.float32
    assert x.channel_shape == (3,) and x.channel_spec == ChannelSpec((3,), torch.float32)
    assert x.device == torch.device("cpu")
    assert torch.equal(x.lengths(), torch.tensor([5, 3]))
    assert torch.equal(x.values, torch.arange(30.0).reshape(2, 5, 3) + 1)  # from_lengths keeps values
    assert "Sequence(shape=(2, 5, 3)" in repr(x)
    assert type(x) is Sequence and not isinstance(x, MaskedSequence)
    assert not hasattr(x, "__array__")


def test_non_bool_mask_rejected():
    with pytest.raises(TypeError, match=r"Sequence mask must have dtype torch.bool; got torch.int64"):
        Sequence(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"MaskedSequence mask must have dtype torch\.bool"):
        MaskedSequence(torch.zeros(2, 3), torch.ones(2, 3))


def test_mismatched_shapes_rejected():
    with pytest.raises(ValueError, match=r"values shape \(2, 4, 1\) does not start with the mask shape \(2, 3\)"):
        Sequence(torch.zeros(2, 4, 1), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not start with the mask shape"):
        Sequence(torch.zeros(3, 3, 1), torch.ones(2, 3, dtype=torch.bool))


def test_rank_below_two_rejected():
    with pytest.raises(ValueError, match="rank >= 2"):
        Sequence(torch.zeros(3), torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="rank >= 2"):
        Sequence(torch.zeros(2, 3), torch.ones(6, dtype=torch.bool).reshape(6)[:3])
    with pytest.raises(ValueError, match="rank >= 2"):
        Sequence.from_values(torch.zeros(4))


def test_non_tensor_values_rejected():
    with pytest.raises(TypeError, match=r"expects torch\.Tensor values and mask; got values of type list"):
        Sequence([[1.0, 2.0]], torch.ones(1, 2, dtype=torch.bool))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mask of type ndarray"):
        import numpy as np

        Sequence(torch.zeros(1, 2), np.ones((1, 2), dtype=bool))  # type: ignore[arg-type]


def test_frozen():
    x = _seq(2, 5)
    with pytest.raises(AttributeError):
        x.values = torch.zeros(2, 5)  # type: ignore[misc]


def test_slicing_rules():
    x = _seq(2, 5, 3)
    y = x[:, 1:4]
    assert y.shape == (2, 3, 3) and torch.equal(y.mask, x.mask[:, 1:4])
    assert x[0:1].shape == (1, 5, 3)
    assert x[:, :, 1:].shape == (2, 5, 2)
    m = x.mask_invalid()
    assert type(m[:, 1:]) is MaskedSequence
    with pytest.raises(ValueError, match="may only slice"):
        x[0]
    with pytest.raises(ValueError, match="may only slice"):
        x[:, 2]


# -- transformations -----------------------------------------------------------------------------


def test_from_values_and_lengths():
    v = torch.randn(2, 4, 3)
    x = Sequence.from_values(v)
    assert type(x) is MaskedSequence and bool(x.mask.all())
    y = Sequence.from_lengths(v, [4, 1])
    assert type(y) is Sequence and torch.equal(y.lengths(), torch.tensor([4, 1]))
    assert type(Sequence.from_lengths(v, torch.tensor([0, 2]), is_masked=True)) is MaskedSequence
    assert torch.equal(sequence_mask(torch.tensor([0, 2]), 3), torch.tensor([[False] * 3, [True, True, False]]))


def test_mask_invalid_and_masked_sequence():
    x = _seq(2, 5, 3)
    m = x.mask_invalid()
    assert type(m) is MaskedSequence
    assert not bool(m.values[~m.mask].any())
    assert torch.equal(m.values[m.mask], x.values[x.mask])
    assert m.mask_invalid() is m
    filled = x.mask_invalid(-1.0)
    assert type(filled) is Sequence and bool((filled.values[~filled.mask] == -1).all())
    assert type(m.unmask()) is Sequence
    nan = Sequence(torch.full((1, 2), float("nan")), torch.tensor([[True, False]])).mask_invalid()
    assert nan.values[0, 1] == 0 and torch.isnan(nan.values[0, 0])


def test_apply_family_preserves_or_drops_masked_type():
    m = _seq(2, 5, 3).mask_invalid()
    assert type(m.apply_values(torch.exp)) is Sequence
    assert type(m.apply_values_masked(torch.mul, 2.0)) is MaskedSequence
    out = m.apply(lambda v, mask: (v + 1, mask))
    assert type(out) is Sequence and torch.equal(out.values, m.values + 1)
    assert type(m.apply_masked(lambda v, mask: (v * 3, mask))) is MaskedSequence


def test_pad_time():
    x = _seq(2, 3, 1).mask_invalid()
    p = x.pad_time(1, 2, valid=False)
    assert p.shape == (2, 6, 1) and type(p) is MaskedSequence
    assert not bool(p.mask[:, 0].any()) and not bool(p.mask[:, -2:].any())
    assert torch.equal(p.mask[:, 1:4], x.mask)
    v = x.pad_time(0, 1, valid=True)
    assert bool(v.mask[:, -1].all())
    assert type(x.pad_time(0, 1, valid=False, pad_value=5.0)) is Sequence
    assert x.pad_time(0, 0, valid=False) is x
    with pytest.raises(ValueError, match="non-negative"):
        x.pad_time(-1, 0, valid=False)
    assert x.pad_to_multiple(2).shape[1] == 4 and x.pad_to_multiple(3).shape[1] == 3


def test_concatenate_reverse_to():
    a = _seq(2, 3, 1).mask_invalid()
    b = _seq(2, 2, 1, lengths=(2, 0))
    c = a.concatenate(b)
    assert c.shape == (2, 5, 1) and type(c) is Sequence
    assert type(a.concatenate(a)) is MaskedSequence
    cc = Sequence.concatenate_sequences([a, a, a])
    assert type(cc) is MaskedSequence and cc.shape[1] == 9
    assert type(Sequence.concatenate_sequences([a, b])) is Sequence
    with pytest.raises(ValueError, match="at least one"):
        Sequence.concatenate_sequences([])
    r = a.reverse_time()
    assert torch.equal(r.values, a.values.flip(1)) and torch.equal(r.mask, a.mask.flip(1))
    assert_sequences_equal(r.reverse_time(), a)
    h = a.to(torch.bfloat16)
    assert h.dtype == torch.bfloat16 and h.mask.dtype == torch.bool and type(h) is MaskedSequence
    assert a.astype(None) is a and a.astype(torch.float64).dtype == torch.float64


def test_padding_mode_enum():
    assert PaddingMode("causal") is PaddingMode.CAUSAL
    assert PaddingMode.SAME == "same"


# -- pytree, compile, export ---------------------------------------------------------------------


def test_pytree_round_trip():
    x = _seq(2, 4, 3)
    m = x.mask_invalid()
    tree = {"a": x, "b": (m, torch.ones(1)), "c": [x]}
    leaves, spec = pytree.tree_flatten(tree)
    assert len(leaves) == 2 + 3 + 2
    back = pytree.tree_unflatten(leaves, spec)
    assert type(back["a"]) is Sequence and type(back["b"][0]) is MaskedSequence
    assert back["a"].values is x.values and back["b"][0].mask is m.mask
    doubled = pytree.tree_map(lambda t: t * 2 if t.dtype != torch.bool else t, tree)
    assert torch.equal(doubled["a"].values, x.values * 2) and type(doubled["b"][0]) is MaskedSequence
    keyed, _ = pytree.tree_flatten_with_path({"x": x})
    assert [pytree.keystr(k) for k, _ in keyed] == ["['x'].values", "['x'].mask"]
    assert "sl.types.Sequence" in pytree.treespec_dumps(spec)
    assert pytree.treespec_loads(pytree.treespec_dumps(spec)) == spec


def test_compile_fullgraph_takes_and_returns_sequence():
    @torch.compile(fullgraph=True, backend="eager")
    def fn(x: Sequence, scale: torch.Tensor) -> Sequence:
        y = x.mask_invalid().apply_values_masked(torch.mul, scale)
        return y.pad_time(0, 1, valid=False)

    x = random_sequence(2, 4, 3)
    y = fn(x, torch.tensor(2.0))
    assert type(y) is MaskedSequence
    assert_sequences_equal(y, x.apply_values_masked(torch.mul, 2.0).pad_time(0, 1, valid=False))


def test_compile_fullgraph_layer_step():
    from support_layers import CausalFIR

    layer = CausalFIR(3)
    x = random_sequence(2, 1, 2)
    state = layer.get_initial_state(2, x.channel_spec)
    step = torch.compile(lambda xb, s: layer.step(xb, s), fullgraph=True, backend="eager")
    y, s = step(x, state)
    y_ref, s_ref = layer.step(x, state)
    assert_sequences_equal(y, y_ref)
    assert torch.equal(s, s_ref)


class _Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3))

    def forward(self, x: Sequence) -> Sequence:
        return Sequence(x.values * self.w, x.mask).mask_invalid()


def test_torch_export_sequence_module():
    x = random_sequence(2, 5, 3)
    module = _Scale()
    ep = torch.export.export(module, (x,))
    y = ep.module()(x)
    assert type(y) is MaskedSequence
    assert_sequences_equal(y, module(x))
    # Save / load keeps the Sequence input and output specs (and loads without the unsafe fallback).
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert_sequences_equal(loaded.module()(x), module(x))


def test_torch_export_sl_layer():
    from support_layers import CausalFIR

    layer = CausalFIR(3).eval()
    x = random_sequence(2, 6, 2)
    ep = torch.export.export(layer, (x,))
    assert_sequences_equal(ep.module()(x), layer(x))


def test_sl_reexports():
    assert sl.Sequence is Sequence and sl.MaskedSequence is MaskedSequence
    assert sl.ChannelSpec is ChannelSpec and sl.sequence_mask is sequence_mask


# -- validation the probing found missing -------------------------------------------------


def test_mask_must_be_rank_2_on_the_values_device():
    with pytest.raises(ValueError, match=r"rank-2 mask"):
        Sequence(torch.zeros(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"rank-2 mask"):
        Sequence(torch.zeros(2, 3), torch.ones(2, 3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not start with the mask shape"):
        Sequence(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    meta_mask = torch.ones(2, 3, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match=r"values are on cpu but the mask is on meta"):
        Sequence(torch.zeros(2, 3), meta_mask)


@pytest.mark.parametrize("lengths", [[4, 2], [-1, 2], [3, 3, 3], [1.5, 2]])
def test_from_lengths_rejects_lengths_outside_the_time_axis(lengths):
    with pytest.raises((ValueError, TypeError), match="from_lengths"):
        Sequence.from_lengths(torch.zeros(2, 3), lengths)


def test_masked_sequences_really_are_masked():
    values = torch.tensor([[1.0, 2.0, float("nan")], [float("nan"), 5.0, 6.0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    for x in (
        MaskedSequence(values, mask),
        Sequence.from_lengths(values.clone().nan_to_num_(9.0), [2, 3], is_masked=True),
    ):
        assert type(x) is MaskedSequence
        assert torch.equal(x.values, torch.where(x.mask, x.values, torch.zeros(())))
        assert not bool(torch.isnan(x.values).any())
    assert torch.equal(MaskedSequence(values, mask).values, torch.tensor([[1.0, 2.0, 0.0], [0.0, 5.0, 6.0]]))
    # A NaN tail behind a MaskedSequence never reaches a valid output of a time-mixing layer.
    layer = sl.MaskedDense(1, 1, num_steps=3)
    y = layer.layer(MaskedSequence(values[..., None], mask), training=False)
    assert not bool(torch.isnan(y.values[y.mask]).any())
