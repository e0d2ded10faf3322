"""Core speed: sl layers against plain torch.nn with the same weights, as ratios from one run.

Workload ``mlp``: 4 x Dense(256) + ReLU on [8, 512, 256] layer-wise (forward, forward +
backward) and one timestep per ``step`` at batch 8 (eager and compiled), against the same
stack in ``torch.nn.Sequential``.

    python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import emit, median_time, result

import sl


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


def run(quick: bool = False) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    repeats, inner = (3, 3) if quick else (15, 10)
    batch, time_steps, width, depth = (4, 128, 128, 4) if quick else (8, 512, 256, 4)
    model, twin = _mlp(width, depth)
    x = torch.randn(batch, time_steps, width)
    seq = sl.Sequence.from_values(x)
    out = []

    with torch.no_grad():
        torch.testing.assert_close(model.layer(seq).values, twin(x))
        t_sl = median_time(lambda: model.layer(seq), repeats=repeats, inner=inner)
        t_nn = median_time(lambda: twin(x), repeats=repeats, inner=inner)
    out.append(result("mlp", "layer_forward", t_sl, "torch.nn", t_nn))

    def train_sl() -> None:
        model.layer(seq, training=True).values.sum().backward()

    def train_nn() -> None:
        twin(x).sum().backward()

    out.append(
        result(
            "mlp",
            "layer_forward_backward",
            median_time(train_sl, repeats=repeats, inner=inner),
            "torch.nn",
            median_time(train_nn, repeats=repeats, inner=inner),
        )
    )

    # Streaming: one timestep per call, the per-call overhead that decoding pays.
    state = model.get_initial_state(batch, seq.channel_spec)
    step_in = seq[:, :1]
    with torch.inference_mode():
        t_sl = median_time(lambda: model.step(step_in, state), repeats=repeats, inner=inner * 20)
        t_nn = median_time(lambda: twin(x[:, :1]), repeats=repeats, inner=inner * 20)
    out.append(result("mlp", "step_1_timestep_eager", t_sl, "torch.nn", t_nn))

    compiled = torch.compile(lambda xb, s: model.step(xb, s, training=False), fullgraph=True)
    twin_compiled = torch.compile(twin, fullgraph=True)
    with torch.no_grad():
        compiled(step_in, state)
        twin_compiled(x[:, :1])
        t_sl = median_time(lambda: compiled(step_in, state), repeats=repeats, inner=inner * 20)
        t_nn = median_time(lambda: twin_compiled(x[:, :1]), repeats=repeats, inner=inner * 20)
    out.append(result("mlp", "step_1_timestep_compiled", t_sl, "torch.compile(torch.nn)", t_nn))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args()
    emit(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
