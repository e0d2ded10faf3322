"""Convolution speed: sl-conv layers against plain torch with the same weights, as ratios from one run.

Workload ``conv``: 6 x (Conv1D(256 -> 256, kernel 5, causal) + ReLU + LayerNorm) on
[4, 512, 256] layer-wise (forward; forward + backward) against the same stack written with
``torch.nn.Conv1d`` (causal left padding) / ``ReLU`` / ``LayerNorm``; and batch-1 streaming, one
timestep per ``step``, eager and under ``torch.compile(fullgraph=True)``, against a hand-written
torch streaming loop that keeps a rolling buffer of the last ``kernel - 1`` inputs per layer
(eager and compiled the same way). Targets (issue 8): layer-wise <= 1.1x, compiled step <= 1.2x.

    python benchmarks/bench_conv.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, median_time, result

import sl


class _TorchBlock(torch.nn.Module):
    """Causal Conv1d + ReLU + LayerNorm on [B, T, C], the way one writes it in plain torch."""

    def __init__(self, conv: torch.nn.Conv1d, norm: torch.nn.LayerNorm) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.left = conv.kernel_size[0] - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x.transpose(1, 2), (self.left, 0)))
        return self.norm(torch.relu(h).transpose(1, 2))

    def step(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One block ``x [B, t, C]`` with a rolling buffer ``[B, C, kernel - 1]`` of past inputs."""
        window = torch.cat([buffer, x.transpose(1, 2)], 2)
        h = self.conv(window)
        return self.norm(torch.relu(h).transpose(1, 2)), window[:, :, -self.left :]


class _TorchStack(torch.nn.Module):
    def __init__(self, blocks: list[_TorchBlock]) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def initial_state(self, batch: int, width: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(batch, width, b.left) for b in self.blocks)

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        new = []
        for block, buffer in zip(self.blocks, state):
            x, buffer = block.step(x, buffer)
            new.append(buffer)
        return x, tuple(new)


def _stacks(width: int, kernel: int, depth: int) -> tuple[sl.SequenceLayer, _TorchStack]:
    layers: list[sl.SequenceLayer] = []
    blocks = []
    for _ in range(depth):
        conv = sl.Conv1D(width, width, kernel, padding="causal")
        norm = sl.LayerNorm(width)
        with torch.no_grad():
            conv.bias.normal_(0.0, 0.1)  # type: ignore[union-attr]
            norm.weight.normal_(1.0, 0.1)  # type: ignore[union-attr]
        layers += [conv, sl.Relu(), norm]
        t_conv = torch.nn.Conv1d(width, width, kernel)
        t_norm = torch.nn.LayerNorm(width, eps=1e-6)
        t_conv.load_state_dict(conv.state_dict())
        t_norm.load_state_dict(norm.state_dict())
        blocks.append(_TorchBlock(t_conv, t_norm))
    return sl.Serial(*layers), _TorchStack(blocks)


def _paired(sl_fn: Callable[[], object], nn_fn: Callable[[], object], repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternating rounds (the machine's load drifts)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(median_time(sl_fn, repeats=1, inner=inner, warmup=1))
        b.append(median_time(nn_fn, repeats=1, inner=inner, warmup=1))
    return statistics.median(a), statistics.median(b)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Every case runs single-threaded: batch-1 streaming is a one-core job (a stream per core), and
    on a shared machine more threads mostly measure OpenMP hand-offs between descheduled threads
    (ten-fold swings on the 2-core CI box), not the layers. Both sides get the same thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(quick: bool = False) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    repeats, inner = (3, 2) if quick else (11, 5)
    batch, time_steps, width, kernel, depth = (2, 128, 64, 5, 6) if quick else (4, 512, 256, 5, 6)
    model, twin = _stacks(width, kernel, depth)
    model.eval()
    x = torch.randn(batch, time_steps, width)
    seq = sl.Sequence.from_values(x)
    shape = {"batch": batch, "time": time_steps, "width": width, "kernel": kernel, "depth": depth, "bench_threads": 1}
    out = []
    with _threads(1):
        out += _layer_wise(model, twin, x, seq, repeats, inner, shape)
        out += _streaming(model, twin, width, repeats, inner)
    return out


def _layer_wise(
    model: sl.SequenceLayer,
    twin: _TorchStack,
    x: torch.Tensor,
    seq: sl.Sequence,
    repeats: int,
    inner: int,
    shape: dict[str, int],
) -> list[dict[str, Any]]:
    out = []
    with torch.no_grad():
        torch.testing.assert_close(model.layer(seq).values, twin(x), rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: model.layer(seq), lambda: twin(x), repeats, inner)
    out.append(result("conv", "layer_forward", t_sl, "torch.nn", t_nn, **shape))

    def train_sl() -> None:
        model.layer(seq, training=True).values.sum().backward()

    def train_nn() -> None:
        twin(x).sum().backward()

    t_sl, t_nn = _paired(train_sl, train_nn, repeats, max(1, inner // 2))
    out.append(result("conv", "layer_forward_backward", t_sl, "torch.nn", t_nn, **shape))
    return out


def _streaming(
    model: sl.SequenceLayer, twin: _TorchStack, width: int, repeats: int, inner: int
) -> list[dict[str, Any]]:
    out = []
    # Streaming at batch 1, one timestep per call: a rolling input buffer per convolution.
    one = sl.Sequence.from_values(torch.randn(1, 1, width))
    state = model.get_initial_state(1, one.channel_spec)
    t_state = twin.initial_state(1, width)
    steps = inner * 20
    with torch.inference_mode():
        y_sl, _ = model.step(one, state)
        y_nn, _ = twin.step(one.values, t_state)
        torch.testing.assert_close(y_sl.values, y_nn, rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: model.step(one, state), lambda: twin.step(one.values, t_state), repeats, steps)
    out.append(
        result("conv", "step_1_timestep_eager", t_sl, "torch rolling-buffer loop", t_nn, batch=1, bench_threads=1)
    )

    compiled = torch.compile(lambda xb, s: model.step(xb, s, training=False), fullgraph=True)
    twin_compiled = torch.compile(twin.step, fullgraph=True)
    with torch.no_grad():
        y_c, _ = compiled(one, state)
        y_t, _ = twin_compiled(one.values, t_state)
        torch.testing.assert_close(y_c.values, y_t, rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: compiled(one, state), lambda: twin_compiled(one.values, t_state), repeats, steps)
    out.append(
        result(
            "conv",
            "step_1_timestep_compiled",
            t_sl,
            "torch.compile(torch rolling-buffer loop)",
            t_nn,
            batch=1,
            bench_threads=1,
        )
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    emit(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
