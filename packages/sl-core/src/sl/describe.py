"""``sl describe``: a table of a model's layers with their streaming metadata, like torchinfo.

For every layer of the tree (children indented under their combinator): type, output
spec, parameters, block size, output ratio, input/output latency, receptive field,
state bytes per stream and whether it steps; then totals for the whole model.
:func:`accumulation` gives how latency and receptive field build up along the top-level
chain (``--plot`` draws it; matplotlib is in the ``viz`` extra).
"""

from __future__ import annotations

import dataclasses
import fractions
import importlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from sl import composition_rules as rules
from sl.layer import SequenceLayer, coerce_spec
from sl.types import ChannelSpec

__all__ = ["Row", "accumulation", "describe", "format_table", "load_model"]


@dataclasses.dataclass
class Row:
    path: str
    depth: int
    type: str
    output: str
    parameters: int
    block_size: str
    output_ratio: str
    latency: str
    receptive_field: str
    state_bytes: str
    steppable: str


def _safe(fn: Any) -> str:
    try:
        value = fn()
    except Exception:  # a property may refuse (a non-steppable child, an invalid stack)
        return "n/a"
    if isinstance(value, fractions.Fraction):
        return str(value)
    if isinstance(value, tuple):
        return (
            "(" + ", ".join("-inf" if v == -math.inf else "inf" if v == math.inf else str(int(v)) for v in value) + ")"
        )
    return str(value)


def _state_bytes(layer: SequenceLayer, spec: ChannelSpec) -> str:
    if not layer.supports_step:
        return "-"
    try:
        with torch.no_grad():
            state = layer.get_initial_state(1, spec, training=False)
    except Exception:
        return "n/a"
    leaves = torch.utils._pytree.tree_leaves(state)
    return str(sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor)))


def _spec_text(spec: ChannelSpec) -> str:
    return f"{tuple(spec.shape)} {str(spec.dtype).removeprefix('torch.')}"


def _children(layer: SequenceLayer) -> list[tuple[str, SequenceLayer]]:
    return [(name, child) for name, child in layer.named_children() if isinstance(child, SequenceLayer)] + [
        (f"{name}.{i}", m)
        for name, child in layer.named_children()
        if isinstance(child, torch.nn.ModuleList)
        for i, m in enumerate(child)
        if isinstance(m, SequenceLayer)
    ]


def _accepts(layer: SequenceLayer, spec: ChannelSpec | None) -> bool:
    if spec is None:
        return False
    try:
        layer.get_output_spec(spec)
    except Exception:
        return False
    return True


def _serial_children(layer: SequenceLayer) -> list[SequenceLayer] | None:
    from sl.combinators import Repeat, Serial

    if isinstance(layer, (Serial, Repeat)):
        return list(layer.layers)  # type: ignore[arg-type]
    return None


def describe(layer: SequenceLayer, input_spec: ChannelSpec | tuple[Any, Any]) -> tuple[list[Row], dict[str, str]]:
    """The rows of the table (one per layer, depth first) and the totals."""
    spec = coerce_spec(layer, input_spec)
    rows: list[Row] = []

    def visit(module: SequenceLayer, path: str, depth: int, in_spec: ChannelSpec | None) -> ChannelSpec | None:
        out_spec: ChannelSpec | None = None
        if in_spec is not None:
            try:
                out_spec = module.get_output_spec(in_spec)
            except Exception:
                out_spec = None
        own = sum(p.numel() for p in module.parameters())
        rows.append(
            Row(
                path=path,
                depth=depth,
                type=type(module).__name__,
                output=_spec_text(out_spec) if out_spec is not None else "?",
                parameters=own,
                block_size=_safe(lambda: module.block_size),
                output_ratio=_safe(lambda: module.output_ratio),
                latency=_safe(lambda: f"{module.input_latency}/{module.output_latency}"),
                receptive_field=_safe(lambda: module.receptive_field),
                state_bytes=_state_bytes(module, in_spec) if in_spec is not None else "?",
                steppable="yes" if _safe(lambda: module.supports_step) == "True" else "no",
            )
        )
        serial = _serial_children(module)
        if serial is not None:
            s = in_spec
            for i, child in enumerate(serial):
                s = visit(child, f"{path}.{i}", depth + 1, s)
        else:
            previous: ChannelSpec | None = None
            for name, child in _children(module):
                # Branches see the parent's input (Parallel, Residual, wrappers). A part that cannot
                # take it is taken to follow the previous part (a composite's internal pipeline, as
                # STFT's framer -> fft).
                child_spec = in_spec if _accepts(child, in_spec) else previous
                previous = visit(child, f"{path}.{name}", depth + 1, child_spec)
        return out_spec

    visit(layer, type(layer).__name__, 0, spec)
    top = rows[0]
    totals = {
        "parameters": f"{sum(p.numel() for p in layer.parameters()):,}",
        "output": top.output,
        "block_size": top.block_size,
        "output_ratio": top.output_ratio,
        "latency in/out": top.latency,
        "receptive_field": top.receptive_field,
        "state bytes per stream": top.state_bytes,
        "steppable": top.steppable,
    }
    return rows, totals


def format_table(rows: list[Row], totals: dict[str, str]) -> str:
    header = ["layer", "output", "params", "block", "ratio", "latency in/out", "receptive field", "state B", "step"]
    body = [
        [
            "  " * r.depth + (r.path.rsplit(".", 1)[-1] + ": " if r.depth else "") + r.type,
            r.output,
            f"{r.parameters:,}",
            r.block_size,
            r.output_ratio,
            r.latency,
            r.receptive_field,
            r.state_bytes,
            r.steppable,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(row) for row in body), ""]
    out += [f"{k}: {v}" for k, v in totals.items()]
    return "\n".join(out)


def accumulation(layer: SequenceLayer) -> list[tuple[str, int, float, float]]:
    """Along the top-level chain: ``(layer, output latency so far, receptive field start, end)``
    after each child, in the input's time units."""
    chain = _serial_children(layer) or [layer]
    out = []
    for i in range(1, len(chain) + 1):
        prefix = chain[:i]
        try:
            latency = rules.serial_output_latency(prefix, 0)
        except ValueError:
            latency = -1
        rf = rules.reduce_receptive_field_per_step(rules.receptive_field_per_step_of_serial_layers(prefix))
        start, end = rf if rf is not None else (0.0, 0.0)
        out.append((type(chain[i - 1]).__name__, latency, float(start), float(end)))
    return out


def plot(layer: SequenceLayer, path: str) -> None:
    """Draws :func:`accumulation` to ``path`` (needs matplotlib: ``pip install sl-core[viz]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = accumulation(layer)
    names = [f"{i}: {d[0]}" for i, d in enumerate(data)]
    x = range(len(data))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, len(data) * 0.6), 6), sharex=True)
    ax1.step(x, [d[1] for d in data], where="mid")
    ax1.set_ylabel("output latency (steps)")
    ax1.set_title(f"{type(layer).__name__}: how latency and receptive field accumulate")
    finite = [d for d in data if math.isfinite(d[2]) and math.isfinite(d[3])]
    lo = min((d[2] for d in finite), default=0.0)
    starts = [d[2] if math.isfinite(d[2]) else lo - 1 for d in data]
    ends = [d[3] if math.isfinite(d[3]) else 0 for d in data]
    ax2.fill_between(x, starts, ends, step="mid", alpha=0.4)
    ax2.axhline(0, color="black", lw=0.5)
    ax2.set_ylabel("receptive field (input steps)")
    ax2.set_xticks(list(x), names, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_model(target: str, *, allow_import: bool = True) -> SequenceLayer:
    """A model from ``package.module:factory`` (a callable returning a layer, or a layer) or a
    JSON config file."""
    from sl.config import from_config

    path = Path(target)
    if path.suffix == ".json" and path.exists():
        return from_config(json.loads(path.read_text()), allow_import=allow_import)
    if ":" not in target:
        raise ValueError(f"sl describe: expected MODULE:FACTORY or a .json config file; got {target!r}.")
    module_name, attr = target.split(":", 1)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    model = obj() if callable(obj) and not isinstance(obj, SequenceLayer) else obj
    if not isinstance(model, SequenceLayer):
        raise TypeError(f"sl describe: {target} gave a {type(model).__name__}, not an sl layer.")
    return model
