"""``python -m sl`` / ``sl``: list plugins and layers, run the conformance kit on a plugin.

* ``sl plugins``: every plugin the registry found (name, distribution, version, status);
* ``sl layers [--plugin P]``: every registered layer with its streaming metadata;
* ``sl check PLUGIN [--compile] [--lenient]``: ``sl.testing.check_plugin`` over the
  plugin's ``sl_example_layers`` (strict by default: each example also runs with random
  non-contiguous masks; no examples, duplicate names or a failing hook are failures),
  one line per example and a final ``N passed, M failed`` line. Exit status 1 when
  anything fails, 2 when the plugin is unknown or failed to load;
* ``sl describe MODULE:FACTORY|config.json --input-shape 80 [--plot out.png]``: a table of
  the model's layers (type, output spec, parameters, block size, ratio, latencies,
  receptive field, state bytes per stream, steppable) with totals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence as Seq
from typing import Any, TextIO

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PLUGIN = 2


def _table(rows: list[list[str]], header: list[str], out: TextIO) -> None:
    """Writes a plain left-aligned table (no third-party dependency)."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    print(line(header), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for row in rows:
        print(line(row), file=out)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _cmd_plugins(args: argparse.Namespace, out: TextIO) -> int:
    from sl import registry

    rows = []
    for info in registry.plugins():
        if info.ok:
            classes = set(registry.plugin_layers(info.name).values())
            status = f"ok ({len(classes)} layers, {len(info.layers)} names)"
        else:
            status = f"error: {_first_line(info.error or '')}"
        rows.append([info.name, info.distribution or "-", info.version or "-", status])
    _table(rows, ["plugin", "distribution", "version", "status"], out)
    return EXIT_OK


def _describe(values: list[Any]) -> str:
    """One value if every example agrees, else "varies"; "-" without examples."""
    if not values:
        return "-"
    first = values[0]
    if all(v == first for v in values[1:]):
        return str(first)
    return "varies"


def _layer_metadata(layers: list[Any]) -> dict[str, str]:
    def safe(fn: Any) -> list[Any]:
        out = []
        for layer in layers:
            try:
                out.append(fn(layer))
            except Exception:  # a property may legitimately refuse (e.g. not steppable)
                out.append("n/a")
        return out

    return {
        "steppable": _describe(safe(lambda m: "yes" if m.supports_step else "no")),
        "block": _describe(safe(lambda m: m.block_size)),
        "ratio": _describe(safe(lambda m: m.output_ratio)),
        "latency": _describe(safe(lambda m: f"{m.input_latency}/{m.output_latency}")),
    }


def _cmd_layers(args: argparse.Namespace, out: TextIO) -> int:
    from sl import registry

    if args.plugin is not None and args.plugin not in {p.name for p in registry.plugins()}:
        print(f"error: no sl plugin named {args.plugin!r}.", file=sys.stderr)
        return EXIT_PLUGIN
    instances: dict[type, list[Any]] = {}
    try:
        pairs = registry.examples(args.plugin)
    except Exception as e:  # one plugin's broken example hook must not hide the listing
        print(f"warning: could not collect example layers: {type(e).__name__}: {e}", file=sys.stderr)
        pairs = []
    for _, ex in pairs:
        instances.setdefault(type(ex.layer), []).append(ex.layer)
    primary = registry.primary_names()
    rows = []
    for qualified, cls in registry.all_layers().items():
        plugin, name = qualified.split(":", 1)
        if args.plugin is not None and plugin != args.plugin:
            continue
        meta = _layer_metadata(instances.get(cls, []))
        main_name = primary.get(cls, qualified).split(":", 1)[1]
        shown = name if name == main_name else f"{name} (alias of {main_name})"
        rows.append([shown, plugin, meta["steppable"], meta["block"], meta["ratio"], meta["latency"]])
    _table(rows, ["layer", "plugin", "steppable", "block size", "ratio", "latency in/out"], out)
    print("(metadata comes from example instances; '-' = no example, 'varies' = depends on config)", file=out)
    return EXIT_OK


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from sl import registry
    from sl.testing import check_plugin

    infos = {p.name: p for p in registry.plugins()}
    info = infos.get(args.plugin)
    if info is None:
        known = ", ".join(sorted(infos)) or "none"
        print(f"error: no sl plugin named {args.plugin!r} (loaded plugins: {known}).", file=sys.stderr)
        return EXIT_PLUGIN
    if not info.ok:
        print(f"error: sl plugin {args.plugin!r} failed to load: {info.error}", file=sys.stderr)
        return EXIT_PLUGIN
    results = check_plugin(args.plugin, compile=args.compile, strict=not args.lenient)
    passed = failed = 0
    for r in results:
        if r.ok:
            passed += 1
            print(f"PASSED {r.plugin}:{r.label}", file=out)
        else:
            failed += 1
            detail = r.error if args.verbose else _first_line(r.error)
            print(f"FAILED {r.plugin}:{r.label}: {detail}", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_describe(args: argparse.Namespace, out: TextIO) -> int:
    import torch

    from sl.describe import describe, format_table, load_model, plot

    try:
        model = load_model(args.model)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PLUGIN
    shape = tuple(int(d) for d in args.input_shape.split(",") if d.strip()) if args.input_shape else ()
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        print(f"error: unknown dtype {args.dtype!r}.", file=sys.stderr)
        return EXIT_PLUGIN
    rows, totals = describe(model, (shape, dtype))
    print(format_table(rows, totals), file=out)
    if args.plot:
        plot(model, args.plot)
        print(f"wrote {args.plot}", file=out)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sl", description="Streaming sequence layers: plugins, layers, conformance.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list plugins: name, distribution, version, status")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("layers", help="list registered layers with their streaming metadata")
    p.add_argument("--plugin", default=None, help="only this plugin's layers")
    p.set_defaults(func=_cmd_layers)
    p = sub.add_parser("check", help="run the contract + config round trip over a plugin's example layers")
    p.add_argument("plugin", help="plugin name as listed by `sl plugins`")
    p.add_argument("-v", "--verbose", action="store_true", help="print full failure messages")
    p.add_argument("--compile", action="store_true", help="also run every step under torch.compile(fullgraph=True)")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="only the examples as declared (no extra random-mask run, no check for missing or duplicate names)",
    )
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("describe", help="a table of a model's layers with their streaming metadata")
    p.add_argument("model", help="package.module:factory (a callable returning a layer) or a JSON config file")
    p.add_argument("--input-shape", default="", help="the input channel shape, e.g. 80 or 2,64 (default: scalar)")
    p.add_argument("--dtype", default="float32", help="the input dtype (default float32)")
    p.add_argument("--plot", metavar="PNG", help="also draw how latency and receptive field accumulate")
    p.set_defaults(func=_cmd_describe)
    return parser


def main(argv: Seq[str] | None = None) -> int:
    """Entry point of ``python -m sl`` and the ``sl`` console script; returns the exit status."""
    from sl.registry import PluginError

    args = _parser().parse_args(argv)
    try:
        return int(args.func(args, sys.stdout))
    except PluginError as e:  # SL_STRICT_PLUGINS=1 and a plugin failed
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PLUGIN
