"""Numerical parity of sl against the JAX reference (sequence-layers 0.2).

For every case in ``parity/cases_*.py`` this builds the reference layer and ours with the
same configuration, draws N(0, 1) reference parameters, loads them into ours with
``sl.interop.load_flax_params`` and compares layer-wise and step-wise outputs (masks
exactly, values on valid steps with float32 rtol/atol 1e-5 unless the case says why it
needs more) plus block_size, output_ratio, input/output latency and receptive field.

    python parity/run_parity.py --output docs/parity.md [-k SUBSTRING] [-j JOBS]

The configurations run in ``JOBS`` worker processes (default 2: the CI machine's cores), each
on one thread; the report is the same whatever the split (every configuration has its own seed).

Exits non-zero if any case disagrees without a documented known difference. An error in
one case is recorded as a failing row and does not stop the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import sys
import time
import traceback
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Config, LayerCase  # noqa: E402

PROPERTIES = (
    "block_size",
    "output_ratio",
    "input_latency",
    "output_latency",
    "receptive_field",
    "receptive_field_per_step",
)


@dataclasses.dataclass
class Result:
    label: str
    status: str  # "ok", "fail", "known", "error", "not ported"
    layer_diff: float | None = None
    step_diff: float | None = None
    props_equal: bool | None = None
    detail: str = ""
    seconds: float = 0.0


# ----------------------------------------------------------------------------- data
def _make_input(cfg: Config, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (cfg.batch, cfg.time, *cfg.input_shape)
    if cfg.int_high is not None:
        values = rng.integers(0, cfg.int_high, size=shape).astype(cfg.dtype)
    elif cfg.dtype.startswith("complex"):
        values = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(cfg.dtype)
    else:
        values = rng.standard_normal(shape).astype(cfg.dtype)
    if cfg.transform is not None:
        values = cfg.transform(values).astype(cfg.dtype)
    if cfg.random_mask:
        mask = rng.uniform(size=(cfg.batch, cfg.time)) > 0.3
    else:
        lengths = rng.integers(0, cfg.time + 1, size=(cfg.batch,))
        lengths[0] = cfg.time
        mask = np.arange(cfg.time)[None, :] < lengths[:, None]
    values = np.where(mask.reshape(mask.shape + (1,) * len(cfg.input_shape)), values, np.zeros_like(values))
    return values, mask


def _to_jax(tree: Any) -> Any:
    import jax.numpy as jnp
    import sequence_layers.jax as slj

    if tree is None:
        return None
    out = {}
    for k, v in tree.items():
        if isinstance(v, tuple) and v and v[0] == "sequence":
            out[k] = slj.Sequence(jnp.asarray(v[1]), jnp.asarray(v[2]))
        else:
            out[k] = jnp.asarray(v)
    return out


def _to_torch(tree: Any) -> Any:
    import torch

    import sl

    if tree is None:
        return None
    out = {}
    for k, v in tree.items():
        if isinstance(v, tuple) and v and v[0] == "sequence":
            out[k] = sl.Sequence(torch.from_numpy(np.ascontiguousarray(v[1])), torch.from_numpy(v[2]))
        else:
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
    return out


def _seq_numpy(seq: Any) -> tuple[np.ndarray, np.ndarray]:
    values, mask = seq.values, seq.mask
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":
            values = values.float()
        return values.numpy(), mask.detach().cpu().numpy()
    return np.asarray(values), np.asarray(mask)


def _compare(ref_seq: Any, our_seq: Any, cfg: Config, what: str) -> tuple[float, str]:
    rv, rm = _seq_numpy(ref_seq)
    ov, om = _seq_numpy(our_seq)
    if rv.shape != ov.shape:
        return math.inf, f"{what}: output shape {ov.shape} != reference {rv.shape}"
    if not np.array_equal(rm.astype(bool), om.astype(bool)):
        return math.inf, f"{what}: masks differ at {int((rm != om).sum())} positions"
    valid = rm.astype(bool).reshape(rm.shape + (1,) * (rv.ndim - 2))
    valid = np.broadcast_to(valid, rv.shape)
    if rv.dtype == bool or ov.dtype == bool:
        rv, ov = rv.astype(np.int64), ov.astype(np.int64)
    r = rv[valid].astype(np.complex128 if np.iscomplexobj(rv) or np.iscomplexobj(ov) else np.float64)
    o = ov[valid].astype(r.dtype)
    if r.size == 0:
        return 0.0, ""
    diff = np.abs(r - o)
    same = (np.isnan(r) & np.isnan(o)) | (r == o)  # equal infinities are equal (inf - inf is NaN)
    diff = np.where(same, 0.0, diff)
    worst = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
    tol = cfg.atol + cfg.rtol * np.abs(r)
    bad = ~(diff <= tol)
    if bad.any():
        return (
            worst,
            f"{what}: {int(bad.sum())}/{r.size} valid values outside rtol={cfg.rtol} atol={cfg.atol} (max abs diff {worst:.3g})",
        )
    return worst, ""


def _norm_rf(rf: Any) -> Any:
    if rf is None:
        return None
    return tuple(float(v) for v in rf)


def _props(layer: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PROPERTIES:
        try:
            value = getattr(layer, name)
        except Exception as exc:  # a property may legitimately raise (e.g. undefined latency)
            value = f"raises {type(exc).__name__}"
        if name == "receptive_field":
            value = _norm_rf(value) if not isinstance(value, str) else value
        elif name == "receptive_field_per_step" and isinstance(value, dict):
            value = {int(k): _norm_rf(v) for k, v in sorted(value.items())}
        elif name == "output_ratio" and not isinstance(value, str):
            from fractions import Fraction

            value = Fraction(value)
        out[name] = value
    return out


def _same_property(name: str, ref: Any, ours: Any) -> bool:
    """Equality, except that per-step receptive fields are compared as periodic maps.

    ``{0: a, 1: b}`` and ``{0: a, 1: b, 2: a, 3: b}`` describe the same layer: both are
    tiled to the lcm of their lengths before comparing.
    """
    if name == "receptive_field_per_step" and isinstance(ref, dict) and isinstance(ours, dict) and ref and ours:
        import math

        n = math.lcm(len(ref), len(ours))
        return all(ref[k % len(ref)] == ours[k % len(ours)] for k in range(n))
    return bool(ref == ours)


# ----------------------------------------------------------------------------- one config
def _randomize(variables: Any, seed: int) -> Any:
    import jax

    def randomize_collection(tree: Any, key: Any) -> Any:
        leaves, treedef = jax.tree.flatten(tree)
        keys = jax.random.split(key, max(len(leaves), 1))
        new = []
        for k, leaf in zip(keys, leaves):
            if hasattr(leaf, "dtype") and jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
                new.append(jax.random.normal(k, leaf.shape, leaf.dtype))
            else:
                new.append(leaf)
        return jax.tree.unflatten(treedef, new)

    out = dict(variables)
    if "params" in out:
        out["params"] = randomize_collection(out["params"], jax.random.PRNGKey(seed))
    return out


def run_config(case: LayerCase, cfg: Config, seed: int) -> Result:
    import jax
    import sequence_layers.jax as slj
    import torch
    from sequence_layers.jax import utils as ref_utils

    import sl
    from sl.interop import load_flax_params

    start = time.perf_counter()
    res = Result(cfg.label, "ok")
    try:
        try:
            our_layer = cfg.ours()
        except KeyError as exc:
            res.status, res.detail = "not ported", str(exc).strip("'\"")
            return res
        our_layer.eval()
        rng = np.random.default_rng(seed)
        values, mask = _make_input(cfg, rng)
        consts_np = cfg.constants(rng, cfg.batch, cfg.time) if cfg.constants is not None else None

        ref_layer = cfg.ref().make()
        x_j = slj.Sequence(jax.numpy.asarray(values), jax.numpy.asarray(mask))
        c_j = _to_jax(consts_np)
        variables = ref_layer.init(jax.random.PRNGKey(seed), x_j, training=False, constants=c_j)
        variables = jax.tree.map(lambda a: a, dict(variables))
        if cfg.randomize:
            variables = _randomize(variables, seed + 1)
        bound = ref_layer.bind(variables)

        load_flax_params(our_layer, variables)

        x_t = sl.Sequence(torch.from_numpy(values), torch.from_numpy(mask))
        c_t = _to_torch(consts_np)

        problems = []
        y_ref = bound.layer(x_j, training=False, constants=c_j)
        with torch.no_grad():
            y_our = our_layer.layer(x_t, training=False, constants=c_t)
        res.layer_diff, p = _compare(y_ref, y_our, cfg, "layer")
        if p:
            problems.append(p)

        ref_props, our_props = _props(bound), _props(our_layer)
        mismatched = [n for n in PROPERTIES if not _same_property(n, ref_props[n], our_props[n])]
        res.props_equal = not mismatched
        for n in mismatched:
            problems.append(f"{n}: ours {our_props[n]!r} != reference {ref_props[n]!r}")

        if cfg.check_step and bound.supports_step != our_layer.supports_step:
            problems.append(f"supports_step: ours {our_layer.supports_step} != reference {bound.supports_step}")
        elif cfg.check_step and bound.supports_step:
            y_ref_s, _, _ = ref_utils.step_by_step_static(
                bound,
                x_j,
                training=False,
                constants=c_j,
                blocks_per_step=cfg.blocks_per_step,
                stream_constants=cfg.stream_constants,
                with_emits=False,
            )
            with torch.no_grad():
                y_our_s, _ = sl.step_by_step(
                    our_layer,
                    x_t,
                    training=False,
                    constants=c_t,
                    blocks_per_step=cfg.blocks_per_step,
                    stream_constants=cfg.stream_constants,
                    align_latency=False,  # the reference's step_by_step_static returns raw step outputs
                )
            res.step_diff, p = _compare(y_ref_s, y_our_s, cfg, "step")
            if p:
                problems.append(p)
        if problems:
            res.status = "fail"
            res.detail = "; ".join(problems)
            if cfg.known_difference and cfg.known_scope:
                covered = all(any(p.startswith(k + ":") for k in cfg.known_scope) for p in problems)
                if not covered:
                    res.detail += (
                        f" [not covered by the documented difference, which is limited to {', '.join(cfg.known_scope)}]"
                    )
                    return res
    except Exception as exc:
        res.status = "error"
        tb = traceback.format_exception(exc)
        res.detail = f"{type(exc).__name__}: {str(exc).strip()[:600]} [{tb[-2].strip().splitlines()[0][:200]}]"
    finally:
        res.seconds = time.perf_counter() - start
    if res.status in ("fail", "error") and cfg.known_difference:
        res.status = "known"
        res.detail = f"{cfg.known_difference} ({res.detail})"
    return res


# ----------------------------------------------------------------------------- report
def _fmt_diff(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    worst = max(vals)
    return "inf" if math.isinf(worst) else f"{worst:.1e}"


def _layer_status(results: list[Result]) -> str:
    statuses = {r.status for r in results}
    if statuses == {"not ported"}:
        return "not yet ported"
    if "error" in statuses or "fail" in statuses:
        return "**FAIL**"
    if "known" in statuses:
        return "known difference"
    if "not ported" in statuses:
        return "partial (some configs not constructible)"
    return "agree"


def load_case_modules() -> list[tuple[str, Any]]:
    modules = []
    for path in sorted(HERE.glob("cases_*.py")):
        name = path.stem
        try:
            modules.append((name, importlib.import_module(name)))
        except Exception as exc:
            print(f"warning: could not import {name}: {exc}", file=sys.stderr)
            modules.append((name, exc))
    return modules


def _registered_layers() -> dict[str, tuple[str, type]]:
    import sl

    names = {}
    for cls, qualified in sl.registry.primary_names().items():
        plugin, bare = qualified.split(":", 1)
        names[bare] = (plugin, cls)
    return names


def write_report(
    path: Path, rows: list[tuple[LayerCase, list[Result]]], no_reference: dict[str, str], elapsed: float
) -> None:
    import sequence_layers.jax as slj

    import sl

    registered = _registered_layers()
    covered = {case.name for case, _ in rows}
    counts: dict[str, int] = {}
    for _case, results in rows:
        counts[_layer_status(results)] = counts.get(_layer_status(results), 0) + 1

    lines = [
        "# Parity with the JAX reference",
        "",
        "Generated by `python parity/run_parity.py --output docs/parity.md` (sequence-layers "
        f"{_version('sequence-layers')}, jax {_version('jax')}, torch {_version('torch')}, sl {sl.__version__}). "
        "Each configuration builds the reference layer and the sl layer with the same settings, draws N(0, 1) "
        "reference parameters, loads them with `sl.interop.load_flax_params`, and compares layer-wise outputs and "
        "step-wise outputs (`sl.step_by_step` vs the reference's `utils.step_by_step_static`) on random masks: "
        "masks must be equal and values on valid steps within float32 rtol/atol 1e-5 unless noted. "
        "Properties compared: "
        + ", ".join(f"`{p}`" for p in PROPERTIES)
        + " (per-step receptive fields as periodic maps: both dicts tiled to the lcm of their lengths; sl keeps "
        "every phase of stacked upsamplers, where the reference's dict can be shorter).",
        "",
        f"Summary: {len(rows)} layers; "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + f". Run time {elapsed:.0f} s.",
        "",
        "| Layer | Reference | Configurations tried | Max abs diff (layer) | Max abs diff (step) | Properties equal | Status |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, results in rows:
        labels = ", ".join(f"`{r.label}`" + ("" if r.status == "ok" else f" ({r.status})") for r in results)
        props = [r.props_equal for r in results if r.props_equal is not None]
        props_s = "n/a" if not props else ("yes" if all(props) else "**no**")
        lines.append(
            f"| {case.name} | {case.ref_name} | {labels} | {_fmt_diff([r.layer_diff for r in results])} | "
            f"{_fmt_diff([r.step_diff for r in results])} | {props_s} | {_layer_status(results)} |"
        )

    details = [(case, r) for case, results in rows for r in results if r.status in ("fail", "error", "known")]
    if details:
        lines += ["", "## Disagreements and documented differences", ""]
        for case, r in details:
            lines.append(f"- **{case.name}** `{r.label}` ({r.status}): {r.detail.replace('|', '/')}")

    lines += ["", "## sl layers with no reference counterpart", ""]
    seen = set()
    for name, why in sorted(no_reference.items()):
        where = f" (plugin `{registered[name][0]}`)" if name in registered else " (not registered in this environment)"
        lines.append(f"- {name}{where}: {why}")
        seen.add(name)
    for name, (plugin, _) in sorted(registered.items()):
        if name in seen or name in covered or hasattr(slj, name):
            continue
        lines.append(f"- {name} (plugin `{plugin}`): no layer of this name in sequence_layers.jax")
    if len(lines) and lines[-1] == "":
        lines.append("- none")

    uncovered = sorted(n for n in registered if n not in covered and n not in no_reference and hasattr(slj, n))
    lines += ["", "## Registered layers with a reference counterpart but no parity case yet", ""]
    lines += [f"- {n} (plugin `{registered[n][0]}`)" for n in uncovered] or ["- none"]
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _collect(select: str | None) -> tuple[list[tuple[LayerCase, list[Result] | None]], dict[str, str]]:
    """Every layer case in report order: ``(case, None)`` to run, or ``(case, [error])`` when its
    module or ``cases()`` failed; and the layers without a reference counterpart."""
    rows: list[tuple[LayerCase, list[Result] | None]] = []
    no_reference: dict[str, str] = {}
    for mod_name, module in load_case_modules():
        if isinstance(module, Exception):
            bad = LayerCase(mod_name, [], group=mod_name)
            rows.append((bad, [Result("import", "error", detail=f"{type(module).__name__}: {module}")]))
            continue
        no_reference.update(getattr(module, "NO_REFERENCE", {}))
        try:
            cases = module.cases()
        except Exception as exc:
            bad = LayerCase(mod_name, [], group=mod_name)
            rows.append((bad, [Result("cases()", "error", detail=f"{type(exc).__name__}: {exc}")]))
            continue
        rows.extend((case, None) for case in cases if not select or select.lower() in case.name.lower())
    return rows, no_reference


def _run_one(case: LayerCase, i: int, verbose: bool) -> Result:
    cfg = case.configs[i]
    seed = zlib.crc32(f"{case.name}/{cfg.label}/{i}".encode()) % (2**31)
    r = run_config(case, cfg, seed)
    if verbose or r.status in ("fail", "error"):
        print(f"{case.name:28s} {cfg.label:40s} {r.status:10s} {r.seconds:5.1f}s {r.detail[:300]}", flush=True)
    return r


def _work_items(rows: list[tuple[LayerCase, list[Result] | None]]) -> list[tuple[int, int]]:
    return [(row, i) for row, (case, done) in enumerate(rows) if done is None for i in range(len(case.configs))]


def _worker(shard: int, shards: int, select: str | None, out: str, verbose: bool) -> int:
    """Runs every ``shards``-th configuration (from ``shard``) and writes the results as JSON."""
    import json

    import torch

    torch.set_num_threads(1)
    rows, _ = _collect(select)
    results = []
    for n, (row, i) in enumerate(_work_items(rows)):
        if n % shards == shard:
            results.append({"row": row, "config": i, **dataclasses.asdict(_run_one(rows[row][0], i, verbose))})
    Path(out).write_text(json.dumps(results))
    return 0


def _run_parallel(
    rows: list[tuple[LayerCase, list[Result] | None]], jobs: int, select: str | None, verbose: bool
) -> dict[tuple[int, int], Result]:
    """The configurations split over ``jobs`` processes (one thread each: the machine's cores)."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sl-parity-") as tmp:
        outs = [os.path.join(tmp, f"shard{k}.json") for k in range(jobs)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = []
        for k in range(jobs):
            cmd = [sys.executable, __file__, "--_worker", str(k), str(jobs), outs[k]]
            cmd += (["-k", select] if select else []) + (["-v"] if verbose else [])
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        done: dict[tuple[int, int], Result] = {}
        for k, (code, out) in enumerate(zip(codes, outs)):
            if code or not os.path.exists(out):
                print(f"parity worker {k} exited with {code}", file=sys.stderr, flush=True)
                continue
            for rec in json.loads(Path(out).read_text()):
                key = (rec.pop("row"), rec.pop("config"))
                done[key] = Result(**rec)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/parity.md", help="Markdown report to write.")
    parser.add_argument("-k", dest="select", default=None, help="Only layers whose name contains this substring.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="Processes to run the configurations in (default: 2, or 1 on a single core).",
    )
    parser.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        shard, shards, out = args._worker
        return _worker(int(shard), int(shards), args.select, out, args.verbose)

    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    rows, no_reference = _collect(args.select)
    items = _work_items(rows)
    if args.jobs > 1 and len(items) > 1:
        done = _run_parallel(rows, args.jobs, args.select, args.verbose)
    else:
        done = {(row, i): _run_one(rows[row][0], i, args.verbose) for row, i in items}
    report: list[tuple[LayerCase, list[Result]]] = []
    for row, (case, results) in enumerate(rows):
        if results is None:
            lost = Result("(worker)", "error", detail="the parity worker running this configuration did not report")
            results = [
                done.get((row, i), dataclasses.replace(lost, label=cfg.label)) for i, cfg in enumerate(case.configs)
            ]
        report.append((case, results))
        print(f"{case.name:28s} {_layer_status(results)}", flush=True)
    elapsed = time.perf_counter() - start
    write_report(Path(args.output), report, no_reference, elapsed)
    failing = [case.name for case, results in report if _layer_status(results) == "**FAIL**"]
    print(
        f"{len(report)} layers, {len(failing)} failing{': ' + ', '.join(failing) if failing else ''}; {elapsed:.0f} s"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
