"""Recurrent layers' speed: sl-recurrent against torch.nn.LSTM with the same weights, as ratios from one run.

Workload ``lstm``: 2 x LSTM(256) on [4, 512, 256] layer-wise (forward; forward + backward) as
``sl.Serial(LSTM, LSTM)`` against ``torch.nn.LSTM(256, 256, num_layers=2)``; and batch-1
streaming, one timestep per ``step``, eager and under ``torch.compile(fullgraph=True)``, against
``torch.nn.LSTM``'s own single-step call (one fused call on ``[1, 1, 256]`` with its ``(h, c)``).
Targets (issue 9): layer <= 1.2x torch.nn.LSTM, compiled step <= 1.5x torch.nn.LSTM's step.

Workload ``rglru``: RG-LRU(256, 4 heads) layer mode on [1, T, 256] with the parallel scan
(``scan_type="auto"``) against the same layer with ``scan_type="linear"`` (a sequential loop over
time), forward, for T = 256, 1024, 4096; and the scan alone (``chunked_scan``, what layer mode uses
on CPU, against ``linear_scan``) on the same sizes. The scan's advantage should grow with T.

    python benchmarks/bench_recurrent.py [--quick]
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

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, median_time, result

import sl
from sl_recurrent.rglru import chunked_scan, linear_scan


def _paired(sl_fn: Callable[[], object], nn_fn: Callable[[], object], repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternating rounds (the machine's load drifts)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(median_time(sl_fn, repeats=1, inner=inner, warmup=1))
        b.append(median_time(nn_fn, repeats=1, inner=inner, warmup=1))
    return statistics.median(a), statistics.median(b)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Both sides run with the same thread count (1: a shared machine's OpenMP hand-offs are noise)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _lstm_pair(width: int, depth: int) -> tuple[sl.SequenceLayer, torch.nn.LSTM]:
    model = sl.Serial(*[sl.LSTM(width, width) for _ in range(depth)])
    twin = torch.nn.LSTM(width, width, num_layers=depth, batch_first=True)
    state = {}
    for i, layer in enumerate(model.layers):
        for name, p in layer.state_dict().items():
            state[name.replace("_l0", f"_l{i}")] = p
    twin.load_state_dict(state)
    return model, twin


def _lstm_layer(
    model: sl.SequenceLayer, twin: torch.nn.LSTM, x: torch.Tensor, repeats: int, inner: int, shape: dict[str, int]
) -> list[dict[str, Any]]:
    seq = sl.Sequence.from_values(x)
    out = []
    with torch.no_grad():
        torch.testing.assert_close(model.layer(seq).values, twin(x)[0], rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: model.layer(seq), lambda: twin(x), repeats, inner)
    out.append(result("lstm", "layer_forward", t_sl, "torch.nn.LSTM", t_nn, **shape))

    def train_sl() -> None:
        model.layer(seq, training=True).values.sum().backward()

    def train_nn() -> None:
        twin(x)[0].sum().backward()

    t_sl, t_nn = _paired(train_sl, train_nn, repeats, max(1, inner // 2))
    out.append(result("lstm", "layer_forward_backward", t_sl, "torch.nn.LSTM", t_nn, **shape))
    return out


def _lstm_step(
    model: sl.SequenceLayer, twin: torch.nn.LSTM, width: int, depth: int, repeats: int, inner: int
) -> list[dict[str, Any]]:
    out = []
    one = sl.Sequence.from_values(torch.randn(1, 1, width))
    state = model.get_initial_state(1, one.channel_spec)
    hc = (torch.zeros(depth, 1, width), torch.zeros(depth, 1, width))
    steps = inner * 20
    with torch.inference_mode():
        y_sl, _ = model.step(one, state)
        y_nn, _ = twin(one.values, hc)
        torch.testing.assert_close(y_sl.values, y_nn, rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: model.step(one, state), lambda: twin(one.values, hc), repeats, steps)
    info = {"batch": 1, "width": width, "depth": depth, "bench_threads": 1}
    out.append(result("lstm", "step_1_timestep_eager", t_sl, "torch.nn.LSTM single-step call", t_nn, **info))

    compiled = torch.compile(lambda xb, s: model.step(xb, s, training=False), fullgraph=True)
    with torch.no_grad():
        y_c, _ = compiled(one, state)
        torch.testing.assert_close(y_c.values, y_nn, rtol=1e-4, atol=1e-4)
        t_sl, t_nn = _paired(lambda: compiled(one, state), lambda: twin(one.values, hc), repeats, steps)
    out.append(result("lstm", "step_1_timestep_compiled", t_sl, "torch.nn.LSTM single-step call", t_nn, **info))
    return out


def _rglru(times: tuple[int, ...], width: int, heads: int, repeats: int, inner: int) -> list[dict[str, Any]]:
    out = []
    scan = sl.RGLRU(width, heads).eval()
    loop = sl.RGLRU(width, heads, scan_type="linear").eval()
    loop.load_state_dict(scan.state_dict())
    for t in times:
        seq = sl.Sequence.from_values(torch.randn(1, t, width))
        with torch.no_grad():
            torch.testing.assert_close(scan.layer(seq).values, loop.layer(seq).values, rtol=1e-4, atol=1e-5)
            t_scan, t_loop = _paired(lambda s=seq: scan.layer(s), lambda s=seq: loop.layer(s), repeats, inner)
        a = [torch.rand(1, t, width)]
        b = [torch.randn(1, t, width)]
        h0 = [torch.zeros(1, width)]
        with torch.no_grad():
            t_par, t_seq = _paired(
                lambda a=a, b=b: chunked_scan(a, b), lambda a=a, b=b, h=h0: linear_scan(a, b, h), repeats, inner
            )
        out.append(
            result(
                "rglru",
                f"scan_only_T{t}",
                t_par,
                "sequential loop (linear_scan)",
                t_seq,
                batch=1,
                time=t,
                width=width,
                bench_threads=1,
            )
        )
        out.append(
            result(
                "rglru",
                f"layer_forward_T{t}",
                t_scan,
                "sequential loop (scan_type='linear')",
                t_loop,
                batch=1,
                time=t,
                width=width,
                heads=heads,
                bench_threads=1,
            )
        )
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    repeats, inner = (3, 2) if quick else (9, 3)
    batch, time_steps, width, depth = (2, 64, 64, 2) if quick else (4, 512, 256, 2)
    model, twin = _lstm_pair(width, depth)
    model.eval()
    twin.eval()
    x = torch.randn(batch, time_steps, width)
    shape = {"batch": batch, "time": time_steps, "width": width, "depth": depth, "bench_threads": 1}
    out = []
    with _threads(1):
        out += _lstm_layer(model, twin, x, repeats, inner, shape)
        out += _lstm_step(model, twin, width, depth, repeats, inner)
        out += _rglru((64, 256) if quick else (256, 1024, 4096), 64 if quick else 256, 4, repeats, inner)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    emit(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
