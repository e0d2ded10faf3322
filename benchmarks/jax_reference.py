"""The benchmark workloads in the JAX reference (sequence-layers 0.2) under jax.jit.

Run as a subprocess by ``benchmarks/run.py`` (so it gets its own thread settings and
the same cores as the torch side): ``python benchmarks/jax_reference.py WORKLOAD
[--quick] [--threads N]`` prints one JSON line per case with the median seconds.
Cases: ``layer_forward``, ``layer_forward_backward`` (training mode), and
``step_1_timestep`` (batch 1, one timestep per jitted step, state threaded through).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _configure_threads(threads: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}".strip()
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _median(fn: Callable[[], Any], repeats: int, inner: int) -> float:
    import jax

    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def _model(workload: str) -> tuple[Any, tuple[int, ...]]:
    import sequence_layers.jax as slj

    if workload == "transformer":
        blocks = []
        for _ in range(6):
            blocks.append(
                slj.Residual.Config(
                    [
                        slj.LayerNormalization.Config(),
                        slj.DotProductSelfAttention.Config(
                            num_heads=4, units_per_head=64, max_past_horizon=64, max_future_horizon=0
                        ),
                        slj.DenseShaped.Config(output_shape=(256,)),
                    ]
                )
            )
            blocks.append(
                slj.Residual.Config(
                    [
                        slj.LayerNormalization.Config(),
                        slj.Dense.Config(1024, activation=__import__("jax").nn.relu),
                        slj.Dense.Config(256),
                    ]
                )
            )
        return slj.Serial.Config(blocks), (256,)
    if workload == "convnet":
        layers = []
        for _ in range(6):
            layers += [
                slj.Conv1D.Config(filters=256, kernel_size=5, padding="causal"),
                slj.Relu.Config(),
                slj.LayerNormalization.Config(),
            ]
        return slj.Serial.Config(layers), (256,)
    if workload == "lstm":
        return slj.Serial.Config([slj.LSTM.Config(units=256), slj.LSTM.Config(units=256)]), (256,)
    if workload == "dsp":
        return (
            slj.Serial.Config(
                [
                    slj.STFT.Config(frame_length=512, frame_step=128, fft_length=512, output_magnitude=True),
                    slj.LinearToMelSpectrogram.Config(
                        num_mel_bins=80, sample_rate=16000.0, lower_edge_hertz=20.0, upper_edge_hertz=8000.0
                    ),
                    slj.Log.Config(),
                ]
            ),
            (),
        )
    raise ValueError(f"unknown workload {workload!r}")


def run(workload: str, quick: bool) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import sequence_layers.jax as slj

    config, channels = _model(workload)
    batch, time_steps = (4, 512) if workload != "dsp" else (4, 16000 * 60)
    if quick:
        time_steps = 128 if workload != "dsp" else 16000 * 2
    repeats, inner = (3, 2) if quick else (7, 3)
    layer = config.make()
    key = jax.random.PRNGKey(0)
    x = slj.Sequence.from_values(jax.random.normal(key, (batch, time_steps, *channels), jnp.float32))
    if workload == "dsp":
        x = slj.Sequence.from_values(jnp.abs(x.values) + 0.1)
    params = layer.init(key, x, training=False)
    out = []

    forward = jax.jit(lambda p, v, m: layer.apply(p, slj.Sequence(v, m), training=False).values)
    out.append({"case": "layer_forward", "s": _median(lambda: forward(params, x.values, x.mask), repeats, inner)})

    if workload != "dsp":

        def loss(p: Any, v: Any, m: Any) -> Any:
            return layer.apply(p, slj.Sequence(v, m), training=True).values.sum()

        grad = jax.jit(jax.grad(loss))
        out.append(
            {"case": "layer_forward_backward", "s": _median(lambda: grad(params, x.values, x.mask), repeats, inner)}
        )
    else:  # the reference's STFT -> mel has no parameters: time forward + input gradient
        grad_in = jax.jit(jax.grad(lambda v, m: layer.apply(params, slj.Sequence(v, m), training=False).values.sum()))
        out.append({"case": "layer_forward_backward", "s": _median(lambda: grad_in(x.values, x.mask), repeats, inner)})

    block = layer.bind(params).block_size
    one = slj.Sequence.from_values(x.values[:1, :block])
    state = layer.apply(params, 1, one.channel_spec, training=False, method=layer.get_initial_state)
    step = jax.jit(lambda p, v, m, s: layer.apply(p, slj.Sequence(v, m), s, training=False, method=layer.step))
    holder = {"state": state}

    def one_step() -> Any:
        y, holder["state"] = step(params, one.values, one.mask, holder["state"])
        return y.values

    out.append({"case": "step_1_timestep", "s": _median(one_step, repeats, inner * 20), "block": block})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=["transformer", "convnet", "lstm", "dsp"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _configure_threads(args.threads)
    for r in run(args.workload, args.quick):
        print(json.dumps({"workload": args.workload, **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
