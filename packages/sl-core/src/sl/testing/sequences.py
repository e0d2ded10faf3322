"""Random sequences and sequence comparison for tests."""

from __future__ import annotations

from typing import Any

import torch

from sl.types import MaskedSequence, Sequence

__all__ = ["assert_sequences_close", "assert_sequences_equal", "random_sequence", "sequences_close"]


def random_sequence(
    batch: int,
    time: int,
    *channels: int,
    dtype: torch.dtype = torch.float32,
    random_mask: bool = False,
    random_lengths: bool = True,
    low_length: int = 0,
    high_length: int | None = None,
    low: float | None = None,
    high: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskedSequence:
    """A masked random sequence ``[batch, time, *channels]``.

    Floats are N(0, 1) (complex: both parts), integers uniform in ``[low, high)``
    (default ``[0, 10)``), bools Bernoulli(0.5). By default each row gets a random
    contiguous length in ``[low_length, high_length]`` (0 included), as in the
    reference; ``random_mask=True`` gives a non-contiguous Bernoulli(0.5) mask.
    """
    shape = (batch, time, *channels)
    if dtype.is_complex:
        real_dtype = torch.float32 if dtype == torch.complex64 else torch.float64
        values = torch.complex(
            torch.randn(shape, generator=generator, dtype=real_dtype),
            torch.randn(shape, generator=generator, dtype=real_dtype),
        ).to(dtype)
    elif dtype.is_floating_point:
        values = torch.randn(shape, generator=generator, dtype=torch.float32)
        if low is not None or high is not None:
            lo = -1.0 if low is None else low
            hi = 1.0 if high is None else high
            values = torch.rand(shape, generator=generator) * (hi - lo) + lo
        values = values.to(dtype)
    elif dtype == torch.bool:
        values = torch.rand(shape, generator=generator) < 0.5
    else:
        lo = 0 if low is None else int(low)
        hi = 10 if high is None else int(high)
        values = torch.randint(lo, hi, shape, generator=generator, dtype=torch.int64).to(dtype)
    if random_mask:
        mask = torch.rand((batch, time), generator=generator) < 0.5
    elif random_lengths:
        hi_len = time if high_length is None else min(high_length, time)
        lo_len = min(max(low_length, 0), hi_len)
        lengths = torch.randint(lo_len, hi_len + 1, (batch,), generator=generator)
        mask = torch.arange(time)[None, :] < lengths[:, None]
    else:
        mask = torch.ones((batch, time), dtype=torch.bool)
    seq = Sequence(values, mask).mask_invalid()
    if device is not None:
        seq = seq.to(device)
    return seq  # type: ignore[return-value]


def _aligned(a: Sequence, b: Sequence) -> tuple[Sequence, Sequence]:
    a, b = a.mask_invalid(), b.mask_invalid()
    ta, tb = a.values.shape[1], b.values.shape[1]
    if ta < tb:
        a = a.pad_time(0, tb - ta, valid=False)
    elif tb < ta:
        b = b.pad_time(0, ta - tb, valid=False)
    return a, b


def sequences_close(a: Sequence, b: Sequence, *, rtol: float = 1e-6, atol: float = 1e-6) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` agree: equal masks (after padding the shorter with
    invalid steps) and close values on valid steps. Returns ``(ok, reason)``."""
    if a.channel_shape != b.channel_shape:
        return False, f"channel shapes differ: {a.channel_shape} vs {b.channel_shape}"
    if a.values.shape[0] != b.values.shape[0]:
        return False, f"batch sizes differ: {a.values.shape[0]} vs {b.values.shape[0]}"
    a, b = _aligned(a, b)
    if not torch.equal(a.mask, b.mask):
        diff = (a.mask != b.mask).nonzero()[:5].tolist()
        return False, f"masks differ at [batch, time] {diff} (first 5)"
    va, vb = a.values, b.values
    if va.dtype != vb.dtype:
        common = torch.promote_types(va.dtype, vb.dtype)
        va, vb = va.to(common), vb.to(common)
    if va.dtype == torch.bool or not (va.is_floating_point() or va.is_complex()):
        if torch.equal(va, vb):
            return True, ""
        return False, "integer/bool values differ"
    if va.dtype in (torch.bfloat16, torch.float16):
        va, vb = va.float(), vb.float()
    close = torch.isclose(va, vb, rtol=rtol, atol=atol)
    if bool(close.all()):
        return True, ""
    bad = ~close
    err = (va - vb).abs()
    err = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
    worst = err.max().item()
    where = bad.nonzero()[0].tolist()
    return False, (
        f"values differ at {int(bad.sum())} of {bad.numel()} elements; max |diff| = {worst:.3g} "
        f"(rtol={rtol}, atol={atol}); first at index {where}: {va[tuple(where)].item()} vs {vb[tuple(where)].item()}"
    )


def assert_sequences_close(a: Sequence, b: Sequence, *, rtol: float = 1e-6, atol: float = 1e-6, msg: str = "") -> None:
    ok, reason = sequences_close(a, b, rtol=rtol, atol=atol)
    if not ok:
        raise AssertionError(f"{msg + ': ' if msg else ''}sequences are not close: {reason}")


def assert_sequences_equal(a: Sequence, b: Sequence, msg: str = "") -> None:
    assert_sequences_close(a, b, rtol=0.0, atol=0.0, msg=msg)


def fill_invalid(x: Sequence, value: Any) -> Sequence:
    """A plain Sequence whose invalid steps hold ``value`` (NaN for floats by default)."""
    fill = torch.full((), value, dtype=x.values.dtype, device=x.values.device)
    return Sequence(torch.where(x.expanded_mask(), x.values, fill), x.mask)


def garbage_value(dtype: torch.dtype) -> Any:
    """NaN for float/complex, the largest integer for ints, True for bool."""
    if dtype.is_floating_point or dtype.is_complex:
        return float("nan")
    if dtype == torch.bool:
        return True
    return torch.iinfo(dtype).max
