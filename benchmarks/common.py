"""Shared benchmark helpers: timing and result records (one JSON line per result).

Every ``bench_<name>.py`` defines ``run(quick: bool) -> list[dict]`` built with :func:`result`,
and prints them with :func:`emit` when run as a script; ``benchmarks/run.py`` (``nox -s bench``)
runs them all in one process.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["emit", "machine", "median_time", "result"]


def median_time(fn: Callable[[], object], *, repeats: int = 7, inner: int = 5, warmup: int = 2) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` rounds of ``inner`` calls, after warm-up."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
    }


def result(workload: str, case: str, sl_s: float, baseline: str, baseline_s: float, **extra: Any) -> dict[str, Any]:
    """One measurement: the sl time, the baseline's name and time, and their ratio (sl / baseline)."""
    return {
        "workload": workload,
        "case": case,
        "sl_s": sl_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": sl_s / baseline_s if baseline_s else float("nan"),
        **extra,
    }


def emit(results: list[dict[str, Any]]) -> None:
    info = machine()
    for r in results:
        print(json.dumps({**r, **info}))
