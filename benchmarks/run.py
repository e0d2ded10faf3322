"""The benchmark entry point (``nox -s bench``): sl beside plain torch.nn and the JAX reference.

Workloads (issue 13), float32 on CPU, every case timed as the median of ``--repeats`` rounds
after warm-up, sl and its plain-torch twin measured in alternating rounds (the load on a
shared machine drifts), the JAX reference (sequence-layers 0.2 under ``jax.jit``,
``benchmarks/jax_reference.py``) in a subprocess with the same thread count:

* ``transformer``: 6 pre-norm blocks (LayerNorm, self-attention d=256, 4 heads, past horizon
  64, output projection; LayerNorm, FF 1024 ReLU) on [4, 512, 256]. Twin: the same blocks in
  plain torch (``F.scaled_dot_product_attention`` with a band mask; a rolling K/V window when
  streaming).
* ``convnet``: 6 x (Conv1D 256, kernel 5, causal; ReLU; LayerNorm) on [4, 512, 256]. Twin:
  ``nn.Conv1d`` on left-padded input / ``nn.LayerNorm``; a rolling input buffer when streaming.
* ``lstm``: 2 x LSTM(256) on [4, 512, 256]. Twin: ``nn.LSTM(num_layers=2)`` (layer-wise and the
  eager step), two ``nn.LSTMCell`` for the compiled and exported steps (dynamo does not trace
  ``nn.LSTM``).
* ``dsp``: STFT (512/128, Hann, causal) -> magnitude -> 80 mel bands -> log on 60 s of 16 kHz
  audio, batch 4. Twin: ``torch.stft`` + the mel matrix (a hand-written buffer when streaming).

Cases per workload: ``layer_forward``, ``layer_forward_backward`` (training mode; the input
gradient for the parameter-free dsp), and streaming at batch 1, one timestep (dsp: one 128-sample
hop) per call with the state threaded through: ``step_eager``, ``step_compiled``
(``sl.compile_step`` against ``torch.compile(fullgraph=True)`` of the twin's step) and
``step_aoti`` (``sl.export_step`` -> AOTInductor package against the twin's step exported the
same way). The JAX column is the reference's jitted layer / gradient / step.

``memory``: peak RSS (each probe in a fresh subprocess) of ``Blockwise`` against the child's
``layer`` on inputs up to 65 536 steps, and of ``LocalDotProductSelfAttention`` against dense
band-masked SDPA as T grows. ``deploy``: per-step latency of one exported streaming model in
eager PyTorch, ``sl.compile_step``, the ``torch.export`` program, an AOTInductor package and
onnxruntime (``docs/deploy.md``).

Each result is one JSON line on stdout (times, ratios sl/torch and sl/JAX, targets, machine,
versions); ``--markdown FILE`` also writes the tables.

    python benchmarks/run.py [--quick] [--threads N] [--workloads transformer,convnet,...]
                             [--jax-python PATH | --no-jax] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine

import sl

HERE = Path(__file__).resolve().parent
WORKLOADS = ("transformer", "convnet", "lstm", "dsp", "memory", "deploy")
MODEL_WORKLOADS = WORKLOADS[:4]
JAX_IMPL = "sequence-layers 0.2, jax.jit"
# Issue 13's targets: (case, baseline) -> bound on sl / baseline, and the workloads they cover.
TARGETS: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {
    ("layer_forward", "jax"): (1.0, MODEL_WORKLOADS),
    ("layer_forward", "torch"): (1.1, MODEL_WORKLOADS),
    ("step_compiled", "jax"): (1.0, ("transformer", "convnet", "lstm")),
    ("step_eager", "torch"): (1.5, MODEL_WORKLOADS),
}


# ----------------------------------------------------------------------------- timing
def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def paired(fns: dict[str, Callable[[], object]], *, repeats: int, inner: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, in alternating rounds of ``inner`` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(s) for name, s in samples.items()}


@contextlib.contextmanager
def _quiet_compile() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _Stream:
    """Threads the state of a step function through repeated calls: ``fn(x, state) -> (y, state)``."""

    def __init__(self, fn: Callable[..., Any], x: Any, state: Any) -> None:
        self.fn, self.x, self.state = fn, x, state

    def __call__(self) -> Any:
        y, self.state = self.fn(self.x, self.state)
        return y


class _FlatStream:
    """The same for flat-state callables ``fn(*inputs, *state) -> (*outputs, *state)``."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[Any, ...], state: tuple[Any, ...], n_out: int) -> None:
        self.fn, self.inputs, self.state, self.n_out = fn, inputs, tuple(state), n_out

    def __call__(self) -> Any:
        out = self.fn(*self.inputs, *self.state)
        self.state = tuple(out[self.n_out :])
        return out[0]


class _FlatStep(torch.nn.Module):
    """A twin's ``step(x, state)`` as a module on flat tensors, for torch.export."""

    def __init__(self, owner: torch.nn.Module, step: Callable[..., Any], state: Any) -> None:
        super().__init__()
        self.owner = owner  # registers the parameters
        self._step = step
        _, self._spec = pytree.tree_flatten(state)

    def forward(self, x: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, state = self._step(x, pytree.tree_unflatten(list(flat), self._spec))
        return (y, *pytree.tree_leaves(state))


def _aoti(program: torch.export.ExportedProgram, name: str) -> Callable[..., Any]:
    """AOTInductor package of an exported program (weights frozen into the package), loaded."""
    import torch._inductor

    path = os.path.join(tempfile.mkdtemp(prefix="sl-bench-"), f"{name}.pt2")
    with _quiet_compile():
        torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs={"freezing": True})
    return torch._inductor.aoti_load_package(path)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """The sl model and its plain-torch twin, with what each case calls."""

    name: str
    shape: dict[str, Any]
    model: sl.SequenceLayer
    twin: torch.nn.Module
    seq: sl.Sequence  # layer-wise input
    twin_layer: Callable[[torch.Tensor], torch.Tensor]  # twin forward on seq.values
    step_in: sl.Sequence  # batch-1 step input (one block)
    twin_state: Callable[[], Any]  # fresh twin streaming state
    twin_step_eager: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
    twin_step_compiled: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
    twin_step_module: torch.nn.Module
    twin_state_eager: Callable[[], Any] | None = None  # the eager step's state when it differs
    input_grad: bool = False  # forward+backward: input gradient (no parameters)
    baselines: dict[str, str] = field(default_factory=dict)
    tol: float = 1e-4


def _transformer(quick: bool) -> Workload:
    from bench_attention import _copy_weights, _TorchBlock

    from sl_attention import DotProductSelfAttention

    d, heads, ff, past, blocks = 256, 4, 1024, 64, 6
    batch, t = (2, 64) if quick else (4, 512)
    layers: list[sl.SequenceLayer] = []
    for _ in range(blocks):
        layers.append(
            sl.Residual(
                [
                    sl.LayerNorm(d),
                    DotProductSelfAttention(d, heads, d // heads, past, 0),
                    sl.DenseShaped((heads, d // heads), (d,)),
                ]
            )
        )
        layers.append(sl.Residual([sl.LayerNorm(d), sl.Dense(d, ff, activation="relu"), sl.Dense(ff, d)]))
    model = sl.Serial(*layers)
    twins = [_TorchBlock(d, heads, ff) for _ in range(blocks)]
    for twin in twins:
        twin.ln1.eps = twin.ln2.eps = 1e-6  # the reference's (and sl's) LayerNorm epsilon
    enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True),
        blocks,
        enable_nested_tensor=False,
    )
    _copy_weights(model, twins, enc)  # type: ignore[arg-type]
    stack = torch.nn.ModuleList(twins)
    i = torch.arange(t)
    band = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - past)

    def layer(x: torch.Tensor) -> torch.Tensor:
        for block in stack:
            x = block(x, band)
        return x

    def state() -> list[tuple[torch.Tensor, ...]]:
        z = torch.zeros(1, heads, past, d // heads)
        return [(z.clone(), z.clone(), torch.zeros(1, 1, 1, past, dtype=torch.bool)) for _ in stack]

    def step(x: torch.Tensor, caches: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, list[Any]]:
        new = []
        for block, cache in zip(stack, caches):
            x, cache = block.step(x, cache)
            new.append(cache)
        return x, new

    return Workload(
        "transformer",
        {"batch": batch, "time": t, "width": d, "heads": heads, "ff": ff, "past": past, "blocks": blocks},
        model,
        stack,
        sl.Sequence.from_values(torch.randn(batch, t, d)),
        layer,
        sl.Sequence.from_values(torch.randn(1, 1, d)),
        state,
        step,
        step,
        _FlatStep(stack, step, state()),
        baselines={"layer": "plain torch blocks (SDPA, band mask)", "step": "hand-written K/V-window step"},
        tol=1e-3,
    )


def _convnet(quick: bool) -> Workload:
    from bench_conv import _stacks

    width, kernel, depth = 256, 5, 6
    batch, t = (2, 64) if quick else (4, 512)
    model, twin = _stacks(width, kernel, depth)
    return Workload(
        "convnet",
        {"batch": batch, "time": t, "width": width, "kernel": kernel, "depth": depth},
        model,
        twin,
        sl.Sequence.from_values(torch.randn(batch, t, width)),
        twin,
        sl.Sequence.from_values(torch.randn(1, 1, width)),
        lambda: twin.initial_state(1, width),
        twin.step,
        twin.step,
        _FlatStep(twin, twin.step, twin.initial_state(1, width)),
        baselines={"layer": "nn.Conv1d + ReLU + nn.LayerNorm", "step": "hand-written rolling-buffer step"},
    )


class _LSTMCells(torch.nn.Module):
    """nn.LSTM's layers as nn.LSTMCell (the same weights): a step dynamo and export trace."""

    def __init__(self, lstm: torch.nn.LSTM) -> None:
        super().__init__()
        self.cells = torch.nn.ModuleList()
        for i in range(lstm.num_layers):
            cell = torch.nn.LSTMCell(lstm.input_size if i == 0 else lstm.hidden_size, lstm.hidden_size)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(lstm, f"{name}_l{i}"))
            self.cells.append(cell)

    def step(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[Any]]:
        h = x[:, 0]
        new = []
        for cell, hc in zip(self.cells, state):
            hc = cell(h, hc)
            h = hc[0]
            new.append(hc)
        return h[:, None], new


def _lstm(quick: bool) -> Workload:
    from bench_recurrent import _lstm_pair

    width, depth = 256, 2
    batch, t = (2, 64) if quick else (4, 512)
    model, twin = _lstm_pair(width, depth)
    cells = _LSTMCells(twin)

    def eager_step(x: torch.Tensor, hc: Any) -> tuple[torch.Tensor, Any]:
        y, hc = twin(x, hc)
        return y, hc

    def cell_state() -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, width), torch.zeros(1, width)) for _ in range(depth)]

    return Workload(
        "lstm",
        {"batch": batch, "time": t, "width": width, "depth": depth},
        model,
        twin,
        sl.Sequence.from_values(torch.randn(batch, t, width)),
        lambda x: twin(x)[0],
        sl.Sequence.from_values(torch.randn(1, 1, width)),
        cell_state,
        eager_step,
        cells.step,
        _FlatStep(cells, cells.step, cell_state()),
        twin_state_eager=lambda: (torch.zeros(depth, 1, width), torch.zeros(depth, 1, width)),
        baselines={
            "layer": "nn.LSTM(num_layers=2)",
            "step_eager": "nn.LSTM single-step call",
            "step": "2 x nn.LSTMCell step",
        },
    )


def _dsp(quick: bool) -> Workload:
    from bench_dsp import HOP, N_FFT, RATE, _front_end, _TorchFrontEnd

    seconds = 2 if quick else 60
    batch = 4
    model, fe = _front_end(), _TorchFrontEnd()
    holder = torch.nn.Module()
    holder.register_buffer("window", fe.window)
    holder.register_buffer("mel", fe.mel)

    def step(block: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        window = torch.cat([buffer, block], 1)
        spec = torch.stft(window, N_FFT, HOP, window=holder.window, center=False, return_complex=True)
        y = torch.log(torch.clamp_min(spec.abs().transpose(1, 2) @ holder.mel, 1e-6))
        return y, window[:, block.shape[1] :]

    return Workload(
        "dsp",
        {"batch": batch, "seconds": seconds, "sample_rate": RATE, "n_fft": N_FFT, "hop": HOP, "mels": 80},
        model,
        holder,
        sl.Sequence.from_values(torch.randn(batch, seconds * RATE)),
        fe.layer,
        sl.Sequence.from_values(torch.randn(1, HOP)),
        lambda: fe.initial_buffer(1),
        step,
        step,
        _FlatStep(holder, step, fe.initial_buffer(1)),
        input_grad=True,
        baselines={"layer": "torch.stft + mel matrix", "step": "hand-written torch.stft buffer step"},
        tol=1e-3,
    )


BUILDERS = {"transformer": _transformer, "convnet": _convnet, "lstm": _lstm, "dsp": _dsp}


# ----------------------------------------------------------------------------- JAX side
def _jax_results(
    python: str | None, workload: str, shape: dict[str, Any], threads: int, quick: bool, reps: dict[str, int]
) -> dict[str, Any]:
    """The reference's times for one workload (case -> record), or {"error": ...}."""
    if python is None:
        return {"error": "skipped (--no-jax)"}
    cmd = [python, str(HERE / "jax_reference.py"), workload, "--threads", str(threads), "--batch", str(shape["batch"])]
    if workload == "dsp":
        cmd += ["--seconds", str(shape["seconds"])]
    else:
        cmd += ["--time", str(shape["time"])]
    cmd += ["--repeats", str(reps["repeats"]), "--inner", str(reps["inner"]), "--step-inner", str(reps["step_inner"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"jax_reference.py exited {proc.returncode}: {tail[0]}"}
    out: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            out[rec["case"]] = rec
    return out


# ----------------------------------------------------------------------------- measuring
def _reps(quick: bool) -> dict[str, int]:
    return {"repeats": 3, "inner": 1, "step_inner": 10} if quick else {"repeats": 7, "inner": 2, "step_inner": 50}


def _record(
    w: Workload,
    case: str,
    sl_s: float,
    torch_s: float | None,
    torch_impl: str,
    jax: dict[str, Any],
    jax_case: str | None,
    **extra: Any,
) -> dict[str, Any]:
    jax_rec = jax.get(jax_case) if jax_case else None
    jax_s = jax_rec["s"] if jax_rec else None
    rec: dict[str, Any] = {
        "workload": w.name,
        "case": case,
        "sl_s": sl_s,
        "torch_s": torch_s,
        "jax_s": jax_s,
        "sl_over_torch": sl_s / torch_s if torch_s else None,
        "sl_over_jax": sl_s / jax_s if jax_s else None,
        "torch_impl": torch_impl,
        "jax_impl": f"{JAX_IMPL} ({jax_case})" if jax_s else None,
        **w.shape,
        **extra,
    }
    if jax_rec and "cpu_per_wall" in jax_rec:
        rec["jax_cpu_per_wall"] = jax_rec["cpu_per_wall"]
    if jax_case and not jax_s:
        rec["jax_error"] = jax.get("error", f"no {jax_case} result")
    targets = {}
    for (tcase, side), (bound, workloads) in TARGETS.items():
        if tcase == case and w.name in workloads:
            ratio = rec[f"sl_over_{side}"]
            targets[f"sl_over_{side}<={bound}"] = None if ratio is None else bool(ratio <= bound)
    if targets:
        rec["targets"] = targets
    return rec


def _cpu_util(fn: Callable[[], object], n: int) -> float:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)


def measure(w: Workload, quick: bool, jax: dict[str, Any]) -> Iterator[dict[str, Any]]:
    reps = _reps(quick)
    model, seq, x = w.model, w.seq, w.seq.values
    # ---- layer-wise forward (eval, no grad)
    model.eval()
    w.twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.layer(seq).values, w.twin_layer(x), rtol=w.tol, atol=w.tol)
        times = paired(
            {"sl": lambda: model.layer(seq), "torch": lambda: w.twin_layer(x)},
            repeats=reps["repeats"],
            inner=reps["inner"],
        )
        util = _cpu_util(lambda: model.layer(seq), 1)
    yield _record(
        w,
        "layer_forward",
        times["sl"],
        times["torch"],
        w.baselines["layer"],
        jax,
        "layer_forward",
        sl_cpu_per_wall=util,
    )

    # ---- forward + backward (training mode; input gradient when there are no parameters)
    model.train()
    w.twin.train()
    if w.input_grad:
        xg = x.clone().requires_grad_(True)
        seq_g = sl.Sequence(xg, seq.mask)

        def sl_train() -> None:
            xg.grad = None
            model.layer(seq_g, training=True).values.sum().backward()

        def torch_train() -> None:
            xg.grad = None
            w.twin_layer(xg).sum().backward()
    else:

        def sl_train() -> None:
            model.zero_grad(set_to_none=True)
            model.layer(seq, training=True).values.sum().backward()

        def torch_train() -> None:
            w.twin.zero_grad(set_to_none=True)
            w.twin_layer(x).sum().backward()

    times = paired({"sl": sl_train, "torch": torch_train}, repeats=reps["repeats"], inner=reps["inner"], warmup=1)
    yield _record(
        w, "layer_forward_backward", times["sl"], times["torch"], w.baselines["layer"], jax, "layer_forward_backward"
    )
    model.eval()
    w.twin.eval()

    # ---- streaming: batch 1, one block per call, state threaded through
    one = w.step_in
    sl_state = model.get_initial_state(1, one.channel_spec)
    eager_twin_state = (w.twin_state_eager or w.twin_state)()
    step_note = {"step_batch": 1, "step_block": one.values.shape[1]}
    with torch.no_grad():
        y_sl, _ = model.step(one, sl_state)
        y_tw, _ = w.twin_step_eager(one.values, eager_twin_state)
        torch.testing.assert_close(y_sl.values, y_tw, rtol=w.tol, atol=w.tol)
        sl_stream = _Stream(model.step, one, sl_state)
        tw_stream = _Stream(w.twin_step_eager, one.values, eager_twin_state)
        times = paired({"sl": sl_stream, "torch": tw_stream}, repeats=reps["repeats"], inner=reps["step_inner"])
    yield _record(
        w,
        "step_eager",
        times["sl"],
        times["torch"],
        w.baselines.get("step_eager", w.baselines["step"]),
        jax,
        "step_1_timestep",
        **step_note,
    )

    with _quiet_compile():
        sl_compiled = sl.compile_step(model)
        tw_compiled = torch.compile(w.twin_step_compiled, fullgraph=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            y_c, _ = sl_compiled(one, sl_state)
            compile_s = time.perf_counter() - t0
            y_t, _ = tw_compiled(one.values, w.twin_state())
        torch.testing.assert_close(y_c.values, y_sl.values, rtol=w.tol, atol=w.tol)
        torch.testing.assert_close(y_t, y_sl.values, rtol=w.tol, atol=w.tol)
        with torch.no_grad():
            sl_stream = _Stream(sl_compiled, one, model.get_initial_state(1, one.channel_spec))
            tw_stream = _Stream(tw_compiled, one.values, w.twin_state())
            times = paired(
                {"sl": sl_stream, "torch": tw_stream}, repeats=reps["repeats"], inner=reps["step_inner"], warmup=3
            )
    yield _record(
        w,
        "step_compiled",
        times["sl"],
        times["torch"],
        f"torch.compile({w.baselines['step']})",
        jax,
        "step_1_timestep",
        sl_compile_s=compile_s,
        **step_note,
    )

    # ---- exported: torch.export -> AOTInductor package on both sides
    program, module = sl.export_step(model, 1, one.channel_spec)
    sl_aoti = _aoti(program, f"{w.name}-sl")
    tw_program = torch.export.export(w.twin_step_module.eval(), (one.values, *pytree.tree_leaves(w.twin_state())))
    tw_aoti = _aoti(tw_program, f"{w.name}-torch")
    with torch.no_grad():
        out = sl_aoti(one.values, one.mask, *module.initial_state())
        torch.testing.assert_close(out[0], y_sl.values, rtol=w.tol, atol=w.tol)
        sl_stream = _FlatStream(sl_aoti, (one.values, one.mask), module.initial_state(), 2)
        tw_stream = _FlatStream(tw_aoti, (one.values,), tuple(pytree.tree_leaves(w.twin_state())), 1)
        times = paired(
            {"sl": sl_stream, "torch": tw_stream}, repeats=reps["repeats"], inner=reps["step_inner"], warmup=3
        )
    yield _record(
        w,
        "step_aoti",
        times["sl"],
        times["torch"],
        f"AOTInductor({w.baselines['step']})",
        jax,
        "step_1_timestep",
        **step_note,
    )


# ----------------------------------------------------------------------------- memory
def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def _probe(kind: str, impl: str, t: int) -> dict[str, Any]:
    """Runs in a fresh process: the peak RSS above the steady state while ``impl`` runs on ``t`` steps."""
    torch.manual_seed(0)
    d = 256
    with torch.no_grad():
        if kind == "blockwise":
            child = sl.Serial(sl.Dense(d, 4 * d, activation="relu"), sl.Dense(4 * d, d)).eval()
            block = 512
            layer = sl.Blockwise(child, block).eval() if impl == "Blockwise" else child

            def fn(x: torch.Tensor) -> torch.Tensor:
                return layer.layer(sl.Sequence.from_values(x)).values
        else:
            from sl_attention import LocalDotProductSelfAttention

            heads, units, past, block = 4, 64, 64, 64
            local = LocalDotProductSelfAttention(d, heads, units, block, past).eval()
            w = local.input_projection.in_proj_weight.detach()

            if impl == "LocalDotProductSelfAttention":

                def fn(x: torch.Tensor) -> torch.Tensor:
                    return local.layer(sl.Sequence.from_values(x)).values
            else:

                def fn(x: torch.Tensor) -> torch.Tensor:
                    n = x.shape[1]
                    i = torch.arange(n)
                    band = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - past)
                    q, k, v = (x @ w.T).reshape(1, n, 3, heads, units).unbind(2)
                    a = F.scaled_dot_product_attention(
                        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=band
                    )
                    return a.transpose(1, 2).reshape(1, n, d)

        fn(torch.randn(1, 2 * block, d))  # warm-up: lazily built kernels, allocator pools
        x = torch.randn(1, t, d)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            base = _rss_kb("VmRSS")
            peak_field = "VmHWM"
        except OSError:  # no clear_refs: the peak includes the warm-up and imports
            base, peak_field = _rss_kb("VmRSS"), "VmHWM"
        y = fn(x)
        peak = _rss_kb(peak_field)
    return {
        "peak_above_base_bytes": (peak - base) * 1024,
        "input_bytes": x.numel() * x.element_size(),
        "output_bytes": y.numel() * y.element_size(),
        "block": block,
    }


def memory(quick: bool) -> Iterator[dict[str, Any]]:
    plan = {
        ("blockwise", "Blockwise"): (4096, 16384) if quick else (4096, 16384, 65536),
        ("blockwise", "child.layer"): (4096, 16384) if quick else (4096, 16384, 65536),
        ("local_attention", "LocalDotProductSelfAttention"): (2048, 8192) if quick else (4096, 16384, 65536),
        ("local_attention", "dense band-masked SDPA"): (1024, 2048) if quick else (2048, 4096, 8192),
    }
    what = {
        "blockwise": "Serial(Dense 256->1024 relu, Dense 1024->256), batch 1: Blockwise(512) against the child's layer",
        "local_attention": "self-attention d=256, 4 heads, past 64, batch 1: LocalDotProductSelfAttention against SDPA with a dense band mask",
    }
    for (kind, impl), times in plan.items():
        for t in times:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_probe", kind, impl, str(t)]
            env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode:
                yield {"workload": "memory", "case": kind, "impl": impl, "time": t, "error": proc.stderr.strip()[-500:]}
                continue
            probe = json.loads(proc.stdout.strip().splitlines()[-1])
            excess = probe["peak_above_base_bytes"] - probe["output_bytes"]
            yield {
                "workload": "memory",
                "case": kind,
                "impl": impl,
                "time": t,
                "model": what[kind],
                **probe,
                "peak_above_io_bytes": excess,
                "peak_above_io_bytes_per_step": excess / t,
            }


# ----------------------------------------------------------------------------- deploy
def _mlp() -> sl.SequenceLayer:
    return sl.Serial(*[sl.Dense(256, 256, activation="relu") for _ in range(4)])


def deploy(quick: bool, threads: int) -> Iterator[dict[str, Any]]:
    """Per-step latency of exported streaming models: eager, compiled, replayed, exported, AOTInductor, onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    reps = _reps(quick)
    models: dict[str, Callable[[], tuple[sl.SequenceLayer, sl.Sequence]]] = {
        "mlp": lambda: (_mlp(), sl.Sequence.from_values(torch.randn(1, 1, 256))),
    }
    if not quick:
        for name in ("transformer", "convnet", "lstm", "dsp"):
            models[name] = lambda name=name: (lambda w: (w.model, w.step_in))(BUILDERS[name](True))
    for name, build in models.items():
        torch.manual_seed(0)
        model, one = build()
        model.eval()
        times: dict[str, Callable[[], object]] = {}
        with torch.no_grad():
            state = model.get_initial_state(1, one.channel_spec)
            y_ref, _ = model.step(one, state)
            times["eager"] = _Stream(model.step, one, state)
            with _quiet_compile():
                compiled = sl.compile_step(model)
                compiled(one, state)
            times["compiled"] = _Stream(compiled, one, model.get_initial_state(1, one.channel_spec))
            replayed = sl.replay_step(model)
            torch.testing.assert_close(replayed(one, state)[0].values, y_ref.values, rtol=1e-5, atol=1e-5)
            times["replay"] = _Stream(replayed, one, model.get_initial_state(1, one.channel_spec))
            program, module = sl.export_step(model, 1, one.channel_spec)
            times["exported"] = _FlatStream(program.module(), (one.values, one.mask), module.initial_state(), 2)
            runner = _aoti(program, f"deploy-{name}")
            torch.testing.assert_close(
                runner(one.values, one.mask, *module.initial_state())[0], y_ref.values, rtol=1e-4, atol=1e-4
            )
            times["aoti"] = _FlatStream(runner, (one.values, one.mask), module.initial_state(), 2)
            note = None
            if ort is not None:
                path = os.path.join(tempfile.mkdtemp(prefix="sl-bench-"), f"{name}.onnx")
                with _quiet_compile(), contextlib.redirect_stdout(sys.stderr):
                    sl.export_onnx(model, 1, one.channel_spec, path)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
                names = [i.name for i in session.get_inputs()]
                feeds_in = (one.values.numpy(), one.mask.numpy())
                first = session.run(None, dict(zip(names, [*feeds_in, *(t.numpy() for t in module.initial_state())])))
                torch.testing.assert_close(torch.from_numpy(first[0]), y_ref.values, rtol=1e-4, atol=1e-4)

                def ort_step(*args: Any, session: Any = session, names: list[str] = names) -> Any:
                    return session.run(None, dict(zip(names, args)))

                times["onnxruntime"] = _FlatStream(
                    ort_step, feeds_in, tuple(t.numpy() for t in module.initial_state()), 2
                )
            else:
                note = "onnxruntime not installed"
            if name == "mlp":
                weights = [(layer.weight, layer.bias) for layer in model.layers]

                def bare(weights: list[Any] = weights, x: torch.Tensor = one.values) -> torch.Tensor:
                    for wt, b in weights:
                        x = torch.relu(F.linear(x, wt, b))
                    return x

                times["bare F.linear loop"] = bare
            medians = paired(times, repeats=reps["repeats"], inner=reps["step_inner"], warmup=3)
        rec: dict[str, Any] = {
            "workload": "deploy",
            "case": "step_1_timestep",
            "model": name,
            "step_block": one.values.shape[1],
            "state_bytes_per_stream": module.state_bytes(),
            **{f"{k}_s": v for k, v in medians.items()},
        }
        for k, v in medians.items():
            if k not in ("eager", "compiled"):
                rec[f"{k}_over_eager"] = v / medians["eager"]
                rec[f"{k}_over_compiled"] = v / medians["compiled"]
        if note:
            rec["note"] = note
        yield rec


# ----------------------------------------------------------------------------- reporting
def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dist in ("sl-core", "sl-conv", "sl-attention", "sl-dsp", "sl-recurrent", "onnxruntime", "onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 0.1:
        return f"{s * 1e3:.0f} ms"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def _fmt_r(r: float | None, bound: float | None = None) -> str:
    if r is None:
        return "-"
    text = f"{r:.2f}"
    if bound is not None:
        text += " ✓" if r <= bound else f" ✗ (>{bound})"
    return text


def markdown(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"Machine: {header['cpu']}, {header['cores']} cores, {header['threads']} thread(s) on every side "
        f"(pinned to cores {header['pinned_cores']}); "
        f"torch {header['torch']}, jax {header.get('jax', '-')}, sequence-layers {header.get('sequence_layers', '-')}, "
        f"onnxruntime {header.get('onnxruntime', '-')}; load average at start {header['load_average']}.",
        "",
        "| workload | case | sl | plain torch | JAX reference | sl / torch | sl / JAX |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["workload"] not in MODEL_WORKLOADS:
            continue
        bounds = {side: TARGETS.get((r["case"], side), (None, ()))[0] for side in ("torch", "jax")}
        bounds = {
            k: (v if r["workload"] in TARGETS.get((r["case"], k), (None, ()))[1] else None) for k, v in bounds.items()
        }
        lines.append(
            f"| {r['workload']} | {r['case']} | {_fmt_s(r['sl_s'])} | {_fmt_s(r['torch_s'])} | {_fmt_s(r['jax_s'])} "
            f"| {_fmt_r(r['sl_over_torch'], bounds['torch'])} | {_fmt_r(r['sl_over_jax'], bounds['jax'])} |"
        )
    dep = [r for r in results if r["workload"] == "deploy"]
    if dep:
        impls = [k[:-2] for k in dep[0] if k.endswith("_s")]
        lines += [
            "",
            "| model (batch 1, one block per call) | "
            + " | ".join(impls)
            + " | replay / eager | onnxruntime / eager | onnxruntime / compiled | aoti / compiled |",
        ]
        lines.append("|---" * (len(impls) + 5) + "|")
        for r in dep:
            cells = [_fmt_s(r.get(f"{k}_s")) for k in impls]
            lines.append(
                f"| {r['model']} | " + " | ".join(cells) + f" | {_fmt_r(r.get('replay_over_eager'))} "
                f"| {_fmt_r(r.get('onnxruntime_over_eager'))} "
                f"| {_fmt_r(r.get('onnxruntime_over_compiled'))} | {_fmt_r(r.get('aoti_over_compiled'))} |"
            )
    mem = [r for r in results if r["workload"] == "memory" and "error" not in r]
    if mem:
        lines += [
            "",
            "| memory probe | T | peak RSS above steady state | of which not input/output | per step |",
            "|---|---|---|---|---|",
        ]
        for r in mem:
            lines.append(
                f"| {r['impl']} | {r['time']} | {r['peak_above_base_bytes'] / 2**20:.1f} MiB "
                f"| {r['peak_above_io_bytes'] / 2**20:.1f} MiB | {r['peak_above_io_bytes_per_step'] / 1024:.2f} KiB |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="threads on every side (torch, XLA, onnxruntime)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}")
    parser.add_argument(
        "--jax-python", default=sys.executable, help="python with sequence-layers 0.2 (default: this one)"
    )
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX reference")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin this process (and so the JAX subprocess) to --threads cores; pinning gives every "
        "side literally the same cores and stops XLA's runtime threads spilling onto others",
    )
    parser.add_argument("--_probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.no_pin and hasattr(os, "sched_setaffinity") and args.threads < _cpu_count():
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-args.threads :])
    if args._probe:
        kind, impl, t = args._probe
        print(json.dumps(_probe(kind, impl, int(t))))
        return 0
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {WORKLOADS}")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    header: dict[str, Any] = {
        **machine(),
        "cores": os.cpu_count(),
        "pinned_cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "quick": args.quick,
        **versions(),
    }
    results: list[dict[str, Any]] = []
    jax_python = None if args.no_jax else args.jax_python

    def emit(rec: dict[str, Any]) -> None:
        results.append(rec)
        print(json.dumps({**rec, **header}), flush=True)

    for name in names:
        torch.manual_seed(0)
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        if name in BUILDERS:
            w = BUILDERS[name](args.quick)
            jax = _jax_results(jax_python, name, w.shape, args.threads, args.quick, _reps(args.quick))
            for key in ("jax", "jaxlib", "sequence_layers"):
                for rec in jax.values():
                    if isinstance(rec, dict) and key in rec:
                        header[key] = rec[key]
            for rec in measure(w, args.quick, jax):
                emit(rec)
        elif name == "memory":
            for rec in memory(args.quick):
                emit(rec)
        elif name == "deploy":
            for rec in deploy(args.quick, args.threads):
                emit(rec)
    table = markdown(results, header)
    print(table, file=sys.stderr)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
