"""Profile evidence for ``docs/benchmarks.md``: where one call of a ``run.py`` workload spends its time.

For the sl model and its plain-torch twin (the same objects ``run.py`` times), on one thread:

* the wall time per call without a profiler, and the time inside ATen ops per call (the sum of
  ``torch.profiler``'s self CPU time over ops): the difference is per-call overhead (Python,
  argument checks, dispatch of the wrappers, dynamo guards);
* the ``torch.profiler`` table of the top ops by self CPU time;
* with ``--cprofile``, the top Python functions of the sl call by internal time.

Modes: ``layer`` (layer-wise forward), ``step_eager``, ``step_compiled`` (``sl.compile_step`` /
``torch.compile``) and ``step_aoti`` (AOTInductor packages of the exported steps).

    python benchmarks/profile_step.py WORKLOAD [--mode MODE] [--calls N] [--top K] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

import sl


def _callables(w: run.Workload, mode: str) -> dict[str, Callable[[], object]]:
    model = w.model.eval()
    w.twin.eval()
    one = w.step_in
    if mode == "layer":
        return {"sl": lambda: model.layer(w.seq), "torch": lambda: w.twin_layer(w.seq.values)}
    if mode == "step_eager":
        return {
            "sl": run._Stream(model.step, one, model.get_initial_state(1, one.channel_spec)),
            "torch": run._Stream(w.twin_step_eager, one.values, (w.twin_state_eager or w.twin_state)()),
        }
    if mode == "step_compiled":
        with run._quiet_compile():
            compiled = sl.compile_step(model)
            twin = torch.compile(w.twin_step_compiled, fullgraph=True)
        return {
            "sl": run._Stream(compiled, one, model.get_initial_state(1, one.channel_spec)),
            "torch": run._Stream(twin, one.values, w.twin_state()),
        }
    if mode == "step_aoti":
        program, module = sl.export_step(model, 1, one.channel_spec)
        tw_state = tuple(pytree.tree_leaves(w.twin_state()))
        tw_program = torch.export.export(w.twin_step_module.eval(), (one.values, *tw_state))
        return {
            "sl": run._FlatStream(
                run._aoti(program, f"prof-{w.name}-sl"), (one.values, one.mask), module.initial_state(), 2
            ),
            "torch": run._FlatStream(run._aoti(tw_program, f"prof-{w.name}-torch"), (one.values,), tw_state, 1),
        }
    raise ValueError(f"unknown mode {mode!r}")


def _wall(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def report(workload: str, mode: str, calls: int, top: int, with_cprofile: bool) -> str:
    torch.manual_seed(0)
    w = run.BUILDERS[workload](mode != "layer")  # layer mode: the full-size input
    out = io.StringIO()
    print(f"## {workload} / {mode} ({calls} calls, {torch.get_num_threads()} thread)\n", file=out)
    with torch.no_grad():
        fns = _callables(w, mode)
        for fn in fns.values():
            for _ in range(5):
                fn()
        walls = {name: min(_wall(fn, calls) for _ in range(3)) for name, fn in fns.items()}
        for name, fn in fns.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(calls):
                    fn()
            events = prof.key_averages()
            # Self CPU time of ATen ops (the compute), and of everything the profiler saw.
            aten = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / calls
            print(
                f"{name}: wall {walls[name] * 1e6:.1f} us/call (no profiler); ATen ops' self CPU {aten:.1f} us/call "
                f"(under the profiler); ops per call {sum(e.count for e in events if e.key.startswith('aten::')) / calls:.0f}",
                file=out,
            )
            print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=48), file=out)
        if with_cprofile:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(calls):
                fns["sl"]()
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
            text = s.getvalue()
            print("sl, cProfile (internal time; the profiler itself inflates Python-heavy code):", file=out)
            print(text[text.index("   ncalls") :] if "   ncalls" in text else text, file=out)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(run.BUILDERS))
    parser.add_argument("--mode", default="step_eager", choices=["layer", "step_eager", "step_compiled", "step_aoti"])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and args.threads < (os.cpu_count() or 1):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-args.threads :])
    print(report(args.workload, args.mode, args.calls, args.top, args.cprofile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
