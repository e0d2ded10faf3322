"""Core speed benchmarks: sl layers against plain torch.nn, as ratios from one run.

Prints JSON. Each case times the sl model and its torch.nn twin with the same weights
in the same process, alternating, and reports median times and the ratio sl / torch.

    python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

import sl


def _median_time(fn: Callable[[], object], repeats: int, inner: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def _mlp(width: int, depth: int) -> tuple[sl.SequenceLayer, torch.nn.Module]:
    layers: list[sl.SequenceLayer] = []
    torch_layers: list[torch.nn.Module] = []
    for _ in range(depth):
        dense = sl.Dense(width, width, activation="relu")
        linear = torch.nn.Linear(width, width)
        with torch.no_grad():
            linear.weight.copy_(dense.weight)
            linear.bias.copy_(dense.bias)
        layers.append(dense)
        torch_layers += [linear, torch.nn.ReLU()]
    return sl.Serial(*layers), torch.nn.Sequential(*torch_layers)


def bench(quick: bool) -> dict[str, object]:
    torch.manual_seed(0)
    repeats, inner = (3, 3) if quick else (15, 10)
    batch, time_steps, width, depth = (4, 128, 128, 4) if quick else (8, 512, 256, 4)
    model, twin = _mlp(width, depth)
    x = torch.randn(batch, time_steps, width)
    seq = sl.Sequence.from_values(x)
    results: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    with torch.no_grad():
        torch.testing.assert_close(model.layer(seq).values, twin(x))
        t_sl = _median_time(lambda: model.layer(seq), repeats, inner)
        t_nn = _median_time(lambda: twin(x), repeats, inner)
    results["mlp_layer_forward"] = {"sl_s": t_sl, "torch_s": t_nn, "ratio": t_sl / t_nn}

    def train_sl() -> None:
        model.layer(seq, training=True).values.sum().backward()

    def train_nn() -> None:
        twin(x).sum().backward()

    t_sl = _median_time(train_sl, repeats, inner)
    t_nn = _median_time(train_nn, repeats, inner)
    results["mlp_layer_forward_backward"] = {"sl_s": t_sl, "torch_s": t_nn, "ratio": t_sl / t_nn}

    # Streaming: one timestep per call, the per-call overhead that decoding pays.
    state = model.get_initial_state(batch, seq.channel_spec)
    step_in = seq[:, :1]
    with torch.no_grad():
        t_sl = _median_time(lambda: model.step(step_in, state), repeats, inner * 10)
        t_nn = _median_time(lambda: twin(x[:, :1]), repeats, inner * 10)
    results["mlp_step_1_timestep"] = {"sl_s": t_sl, "torch_s": t_nn, "ratio": t_sl / t_nn}

    # The same step under torch.compile(fullgraph=True): the wrapper checks trace away.
    compiled = torch.compile(lambda xb, s: model.step(xb, s, training=False), fullgraph=True)
    twin_compiled = torch.compile(twin, fullgraph=True)
    with torch.no_grad():
        compiled(step_in, state)
        twin_compiled(x[:, :1])
        t_sl = _median_time(lambda: compiled(step_in, state), repeats, inner * 10)
        t_nn = _median_time(lambda: twin_compiled(x[:, :1]), repeats, inner * 10)
    results["mlp_step_1_timestep_compiled"] = {"sl_s": t_sl, "torch_s": t_nn, "ratio": t_sl / t_nn}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    print(json.dumps(bench(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
