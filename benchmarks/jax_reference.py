"""The benchmark workloads in the JAX reference (sequence-layers 0.2) under jax.jit.

Run as a subprocess by ``benchmarks/run.py`` (so it gets its own thread settings and
the same cores as the torch side): ``python benchmarks/jax_reference.py WORKLOAD
[--quick] [--threads N] [--batch B --time T | --seconds S] [--repeats R --inner I]``
prints one JSON line per case with the median seconds, the process CPU time per wall
second while timing (``cpu_per_wall``: how many cores the case really used) and the
versions. Cases: ``layer_forward``, ``layer_forward_backward`` (training mode; for the
parameter-free dsp workload the input gradient), and ``step_1_timestep`` (batch 1, one
block of the layer's block size per jitted step, state threaded through).

The dsp workload is the same front end as ``bench_dsp.py``: STFT (512/128, periodic Hann,
causal) -> magnitude -> 80 mel bands 0-8 kHz -> max(x, 1e-6) -> log.
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
    """XLA's CPU client sizes its pools from the schedulable cores; one thread means no Eigen
    multi-threading. The caller also restricts the torch side to ``threads``."""
    flags = os.environ.get("XLA_FLAGS", "")
    multi = "true" if threads > 1 else "false"
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}".strip()
    )
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _median(fn: Callable[[], Any], repeats: int, inner: int) -> tuple[float, float]:
    """Median seconds per call after two warm-up calls, and CPU seconds per wall second."""
    import jax

    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
    samples = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / inner)
    util = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    return statistics.median(samples), util


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
                    slj.STFT.Config(
                        frame_length=512, frame_step=128, fft_length=512, time_padding="causal", output_magnitude=True
                    ),
                    slj.LinearToMelSpectrogram.Config(
                        num_mel_bins=80, sample_rate=16000.0, lower_edge_hertz=0.0, upper_edge_hertz=8000.0
                    ),
                    slj.Maximum.Config(1e-6),
                    slj.Log.Config(),
                ]
            ),
            (),
        )
    raise ValueError(f"unknown workload {workload!r}")


def run(workload: str, batch: int, time_steps: int, repeats: int, inner: int, step_inner: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import sequence_layers.jax as slj

    config, channels = _model(workload)
    layer = config.make()
    key = jax.random.PRNGKey(0)
    x = slj.Sequence.from_values(jax.random.normal(key, (batch, time_steps, *channels), jnp.float32))
    if workload == "dsp":
        x = slj.Sequence.from_values(jnp.abs(x.values) + 0.1)
    params = layer.init(key, x, training=False)
    out = []

    forward = jax.jit(lambda p, v, m: layer.apply(p, slj.Sequence(v, m), training=False).values)
    s, util = _median(lambda: forward(params, x.values, x.mask), repeats, inner)
    out.append({"case": "layer_forward", "s": s, "cpu_per_wall": util})

    if workload != "dsp":

        def loss(p: Any, v: Any, m: Any) -> Any:
            return layer.apply(p, slj.Sequence(v, m), training=True).values.sum()

        grad = jax.jit(jax.grad(loss))
        s, util = _median(lambda: grad(params, x.values, x.mask), repeats, inner)
    else:  # the reference's STFT -> mel has no parameters: time forward + input gradient
        grad_in = jax.jit(jax.grad(lambda v, m: layer.apply(params, slj.Sequence(v, m), training=False).values.sum()))
        s, util = _median(lambda: grad_in(x.values, x.mask), repeats, inner)
    out.append({"case": "layer_forward_backward", "s": s, "cpu_per_wall": util})

    block = layer.bind(params).block_size
    one = slj.Sequence.from_values(x.values[:1, :block])
    state = layer.apply(params, 1, one.channel_spec, training=False, method=layer.get_initial_state)
    step = jax.jit(lambda p, v, m, s: layer.apply(p, slj.Sequence(v, m), s, training=False, method=layer.step))
    holder = {"state": state}

    def one_step() -> Any:
        y, holder["state"] = step(params, one.values, one.mask, holder["state"])
        return y.values

    s, util = _median(one_step, repeats, step_inner)
    out.append({"case": "step_1_timestep", "s": s, "cpu_per_wall": util, "block": block})
    return out


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata

    import jax
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "sequence_layers": metadata.version("sequence-layers"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=["transformer", "convnet", "lstm", "dsp"])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--time", type=int, default=None, help="timesteps (default 512; quick 128)")
    parser.add_argument("--seconds", type=float, default=None, help="dsp: seconds of 16 kHz audio (default 60)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--inner", type=int, default=None)
    parser.add_argument("--step-inner", type=int, default=None, help="steps per timing round")
    args = parser.parse_args()
    _configure_threads(args.threads)
    if args.workload == "dsp":
        time_steps = int(16000 * (args.seconds if args.seconds is not None else (2 if args.quick else 60)))
    else:
        time_steps = args.time if args.time is not None else (128 if args.quick else 512)
    repeats = args.repeats or (3 if args.quick else 7)
    inner = args.inner or (1 if args.quick else 2)
    step_inner = args.step_inner or (10 if args.quick else 50)
    info = {"workload": args.workload, "threads": args.threads, **_versions()}
    for r in run(args.workload, args.batch, time_steps, repeats, inner, step_inner):
        print(json.dumps({**info, **r}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
