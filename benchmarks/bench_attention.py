"""sl-attention speed benchmarks, as ratios against plain torch in the same run.

* ``local_scaling``: banded self-attention (past 64, one layer, 4 heads of 64) layer-wise over
  T = 512, 2048, 8192: sl's LocalDotProductSelfAttention and DotProductSelfAttention (both
  computed in query blocks: time and memory grow as T * (past + block)) against
  ``F.scaled_dot_product_attention`` with a dense [T, T] band mask (T**2). ``logit_elements``
  gives the size of the largest score tensor each materialises per batch row and head.
* ``transformer_layer``: a 6-block pre-norm transformer (d=256, 4 heads, FF 1024, past 64) on
  [4, 512, 256], layer-wise, against the same model in plain torch (SDPA with a band mask) and
  ``nn.TransformerEncoder`` (norm_first, band mask), with the same weights.
* ``transformer_step``: the same model streaming one timestep at batch 1, eager and under
  ``torch.compile(fullgraph=True)``, against a hand-written torch K/V-cache step (a rolling
  window of 64 keys per block).

    python benchmarks/bench_attention.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, median_time, result

import sl
from sl.types import Constants, Sequence
from sl_attention import DotProductSelfAttention, LocalDotProductSelfAttention


class _LayerNorm(sl.SequenceLayer):
    """A LayerNorm over the last axis (sl-attention does not depend on sl-conv's)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.weight = torch.nn.Parameter(torch.ones(size))
        self.bias = torch.nn.Parameter(torch.zeros(size))

    @property
    def receptive_field_per_step(self) -> dict[int, Any]:
        return {0: (0, 0)}

    def get_output_shape(self, input_shape: tuple[int, ...], *, constants: Constants | None = None) -> tuple[int, ...]:
        return tuple(input_shape)

    def get_output_dtype(self, input_dtype: torch.dtype, *, constants: Constants | None = None) -> torch.dtype:
        return input_dtype

    def get_initial_state(self, batch_size: int, input_spec: Any, *, training: bool, constants: Any = None) -> Any:
        return ()

    def layer(self, x: Sequence, *, training: bool, constants: Constants | None = None) -> Sequence:
        return Sequence._trusted(F.layer_norm(x.values, (self.size,), self.weight, self.bias), x.mask)

    def step(self, x: Sequence, state: Any, *, training: bool, constants: Constants | None = None) -> Any:
        return self.layer(x, training=training, constants=constants), state


def _band(t: int, past: int, device: Any = None) -> torch.Tensor:
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    return (j <= i) & (j >= i - past)


# ----------------------------------------------------------------------------- local scaling
def _local_scaling(quick: bool) -> list[dict[str, Any]]:
    out = []
    heads, units, past, block = 4, 64, 64, 64
    d = heads * units
    times = (512, 2048) if quick else (512, 2048, 8192)
    repeats, inner = (3, 1) if quick else (5, 2)
    local = LocalDotProductSelfAttention(d, heads, units, block, past).eval()
    banded = DotProductSelfAttention(d, heads, units, past, 0).eval()
    banded.load_state_dict(local.state_dict())
    w = local.input_projection.in_proj_weight.detach()
    for t in times:
        x = torch.randn(1, t, d)
        seq = Sequence.from_values(x)
        mask = _band(t, past)

        def dense(x: torch.Tensor = x, t: int = t, mask: torch.Tensor = mask) -> torch.Tensor:
            q, k, v = (x @ w.T).reshape(1, t, 3, heads, units).unbind(2)
            return F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
            ).transpose(1, 2)

        with torch.no_grad():
            ref = dense()
            torch.testing.assert_close(local.layer(seq).values, ref, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(banded.layer(seq).values, ref, rtol=1e-4, atol=1e-4)
            t_dense = median_time(dense, repeats=repeats, inner=inner, warmup=1)
            for name, layer in (("LocalDotProductSelfAttention", local), ("DotProductSelfAttention", banded)):
                t_sl = median_time(
                    lambda layer=layer, seq=seq: layer.layer(seq), repeats=repeats, inner=inner, warmup=1
                )
                out.append(
                    result(
                        "local_scaling",
                        f"{name} T={t}",
                        t_sl,
                        "SDPA with a dense band mask",
                        t_dense,
                        time=t,
                        logit_elements=t * (past + block),
                        baseline_logit_elements=t * t,
                    )
                )
    return out


# ----------------------------------------------------------------------------- transformer
def _sl_transformer(d: int, heads: int, ff: int, past: int, blocks: int) -> sl.SequenceLayer:
    layers: list[sl.SequenceLayer] = []
    for _ in range(blocks):
        layers.append(
            sl.Residual(
                [
                    _LayerNorm(d),
                    DotProductSelfAttention(d, heads, d // heads, past, 0),
                    sl.DenseShaped((heads, d // heads), (d,)),
                ]
            )
        )
        layers.append(sl.Residual([_LayerNorm(d), sl.Dense(d, ff, activation="relu"), sl.Dense(ff, d)]))
    return sl.Serial(*layers)


class _TorchBlock(torch.nn.Module):
    """The plain-torch twin of one attention + feed-forward block."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.out = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.ff1 = torch.nn.Linear(d, ff)
        self.ff2 = torch.nn.Linear(ff, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.relu(self.ff1(self.ln2(x))))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One timestep with a hand-written rolling K/V window (``past`` keys)."""
        keys, values, valid = cache
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads).unbind(2)
        keys = torch.cat([keys, k.transpose(1, 2)], 2)
        values = torch.cat([values, v.transpose(1, 2)], 2)
        valid = torch.cat([valid, torch.ones_like(valid[..., :1])], -1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=valid)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.ff2(F.relu(self.ff1(self.ln2(x))))
        return x, (keys[:, :, 1:], values[:, :, 1:], valid[..., 1:])


def _copy_weights(model: sl.Serial, twins: list[_TorchBlock], encoder: torch.nn.TransformerEncoder) -> None:
    layers = list(model.layers)
    with torch.no_grad():
        for i, twin in enumerate(twins):
            attn_block, ff_block = layers[2 * i], layers[2 * i + 1]
            ln1, attn, proj = list(attn_block.layers)
            ln2, ff1, ff2 = list(ff_block.layers)
            twin.ln1.weight.copy_(ln1.weight)
            twin.ln1.bias.copy_(ln1.bias)
            twin.qkv.weight.copy_(attn.input_projection.in_proj_weight)
            twin.out.weight.copy_(proj.weight.reshape(twin.out.weight.shape))
            twin.out.bias.copy_(proj.bias)
            twin.ln2.weight.copy_(ln2.weight)
            twin.ln2.bias.copy_(ln2.bias)
            twin.ff1.weight.copy_(ff1.weight)
            twin.ff1.bias.copy_(ff1.bias)
            twin.ff2.weight.copy_(ff2.weight)
            twin.ff2.bias.copy_(ff2.bias)
            enc = encoder.layers[i]
            enc.self_attn.in_proj_weight.copy_(twin.qkv.weight)
            enc.self_attn.in_proj_bias.zero_()
            enc.self_attn.out_proj.weight.copy_(twin.out.weight)
            enc.self_attn.out_proj.bias.copy_(twin.out.bias)
            for a, b in (
                (enc.norm1, twin.ln1),
                (enc.norm2, twin.ln2),
                (enc.linear1, twin.ff1),
                (enc.linear2, twin.ff2),
            ):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)


def _transformer(quick: bool) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    d, heads, ff, past, blocks = 256, 4, 1024, 64, 6
    batch, t = (4, 512)
    repeats, inner = (3, 1) if quick else (7, 3)
    model = _sl_transformer(d, heads, ff, past, blocks).eval()
    twins = [_TorchBlock(d, heads, ff).eval() for _ in range(blocks)]
    enc_layer = torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
    encoder = torch.nn.TransformerEncoder(enc_layer, blocks, enable_nested_tensor=False).eval()
    _copy_weights(model, twins, encoder)
    x = torch.randn(batch, t, d)
    seq = Sequence.from_values(x)
    mask = _band(t, past)
    float_mask = torch.zeros(t, t).masked_fill(~mask, float("-inf"))

    def plain() -> torch.Tensor:
        h = x
        for twin in twins:
            h = twin(h, mask)
        return h

    out = []
    with torch.no_grad():
        expected = plain()
        torch.testing.assert_close(model.layer(seq).values, expected, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(encoder(x, mask=float_mask), expected, rtol=1e-3, atol=1e-3)
        t_sl = median_time(lambda: model.layer(seq), repeats=repeats, inner=inner)
        t_plain = median_time(plain, repeats=repeats, inner=inner)
        t_enc = median_time(lambda: encoder(x, mask=float_mask), repeats=repeats, inner=inner)
    out.append(
        result("transformer_layer", "6 blocks [4, 512, 256], P=64", t_sl, "plain torch (SDPA, band mask)", t_plain)
    )
    out.append(result("transformer_layer", "6 blocks [4, 512, 256], P=64", t_sl, "nn.TransformerEncoder", t_enc))
    out += _transformer_step(model, twins, d, heads, past, quick)
    return out


def _transformer_step(
    model: sl.SequenceLayer, twins: list[_TorchBlock], d: int, heads: int, past: int, quick: bool
) -> list[dict[str, Any]]:
    units = d // heads
    steps = 16 if quick else 64
    xs = torch.randn(1, steps, d)
    seq = Sequence.from_values(xs)

    def torch_cache() -> list[tuple[torch.Tensor, ...]]:
        return [
            (
                torch.zeros(1, heads, past, units),
                torch.zeros(1, heads, past, units),
                torch.zeros(1, 1, 1, past, dtype=torch.bool),
            )
            for _ in twins
        ]

    def torch_step(x: torch.Tensor, caches: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, list[Any]]:
        new = []
        for twin, cache in zip(twins, caches):
            x, cache = twin.step(x, cache)
            new.append(cache)
        return x, new

    def sl_step(x: Sequence, state: Any) -> Any:
        return model.step(x, state, training=False)

    out = []
    with torch.no_grad():
        # Both streams agree with the layer-wise model.
        state = model.get_initial_state(1, seq.channel_spec)
        caches = torch_cache()
        ys, yt = [], []
        for i in range(steps):
            y, state = model.step(seq[:, i : i + 1], state)
            ys.append(y.values)
            h, caches = torch_step(xs[:, i : i + 1], caches)
            yt.append(h)
        expected = model.layer(seq).values
        torch.testing.assert_close(torch.cat(ys, 1), expected, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(torch.cat(yt, 1), expected, rtol=1e-3, atol=1e-3)

        def run_stream(step_fn: Any, initial: Any, inputs: list[Any]) -> Any:
            s = initial
            for xb in inputs:
                _, s = step_fn(xb, s)
            return s

        sl_inputs = [seq[:, i : i + 1] for i in range(steps)]
        torch_inputs = [xs[:, i : i + 1] for i in range(steps)]
        repeats, inner = (3, 1) if quick else (7, 2)
        init_state = model.get_initial_state(1, seq.channel_spec)
        t_sl = median_time(lambda: run_stream(sl_step, init_state, sl_inputs), repeats=repeats, inner=inner) / steps
        t_torch = median_time(lambda: run_stream(torch_step, torch_cache(), torch_inputs), repeats=repeats, inner=inner)
        t_torch /= steps
        out.append(
            result("transformer_step", "batch 1, 1 step/call, eager", t_sl, "hand-written K/V-cache step", t_torch)
        )

        sl_compiled = torch.compile(sl_step, fullgraph=True, dynamic=False)
        torch_compiled = torch.compile(torch_step, fullgraph=True, dynamic=False)
        y_c, _ = sl_compiled(sl_inputs[0], init_state)
        y_e, _ = sl_step(sl_inputs[0], init_state)
        torch.testing.assert_close(y_c.values, y_e.values, rtol=1e-4, atol=1e-4)
        torch_compiled(torch_inputs[0], torch_cache())
        t_sl = median_time(lambda: run_stream(sl_compiled, init_state, sl_inputs), repeats=repeats, inner=inner)
        t_torch = median_time(
            lambda: run_stream(torch_compiled, torch_cache(), torch_inputs), repeats=repeats, inner=inner
        )
        out.append(
            result(
                "transformer_step",
                "batch 1, 1 step/call, torch.compile(fullgraph=True)",
                t_sl / steps,
                "hand-written K/V-cache step, compiled",
                t_torch / steps,
            )
        )
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    return [*_local_scaling(quick), *_transformer(quick)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    emit(run(parser.parse_args().quick))
