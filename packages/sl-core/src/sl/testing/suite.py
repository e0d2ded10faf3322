"""The shared test suite every package (and third-party plugin) runs over its registered examples.

A package's ``tests/test_examples.py`` is a few lines::

    import pytest
    from sl.testing import suite

    PLUGIN = "conv"

    @pytest.mark.parametrize("case", suite.contract_cases(PLUGIN))
    def test_contract(case):
        suite.run_contract_case(case)

    @pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
    def test_step_compiles(example):
        suite.check_step_compiles(example)

    @pytest.mark.parametrize("example", suite.steppable_examples(PLUGIN))
    def test_step_exports(example):
        suite.check_step_exports(example)

    def test_plugin_installed():
        suite.check_plugin_installed(PLUGIN, distribution="sl-conv", module="sl_conv")

so tests iterate the registry's examples (``examples.py``) instead of keeping tables
of their own. Each example runs :func:`verify_contract` in float32 with its declared
input, again with random non-contiguous masks (lengths 0 included), and in bfloat16
(parameters and input), and its config round-trips; steppable examples compile with
``torch.compile(fullgraph=True, dynamic=True)`` and export with ``torch.export``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import types
from typing import Any

import torch
import torch.utils._pytree as pytree

from sl import registry
from sl.registry import LayerExample
from sl.testing.conformance import check_config_round_trip, example_input
from sl.testing.contract import verify_contract
from sl.testing.dtypes import tolerances
from sl.testing.sequences import random_sequence

__all__ = [
    "ContractCase",
    "check_plugin_installed",
    "check_step_compiles",
    "check_step_exports",
    "check_step_onnx",
    "check_step_replays",
    "contract_cases",
    "run_contract_case",
    "steppable_examples",
]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclasses.dataclass
class ContractCase:
    """One ``verify_contract`` run of one example: its dtype and mask kind."""

    plugin: str
    example: LayerExample
    dtype: torch.dtype
    random_mask: bool

    def __str__(self) -> str:
        mask = "random_mask" if self.random_mask else "lengths"
        return f"{self.example.label}-{str(self.dtype).removeprefix('torch.')}-{mask}"


def _floating_input(example: LayerExample) -> bool:
    dtype = example.dtype or (torch.int64 if example.int_high is not None else torch.float32)
    return dtype.is_floating_point


def contract_cases(plugin: str) -> list[Any]:
    """pytest params: every example of ``plugin`` in float32 (declared and random masks) and in
    each low-precision dtype of ``example.dtypes``."""
    import pytest

    out = []
    for name, example in registry.examples(plugin):
        variants = [(torch.float32, example.random_mask)]
        if not example.random_mask:
            variants.append((torch.float32, True))
        variants += [(d, True) for d in example.dtypes if d in _LOW_PRECISION and _floating_input(example)]
        for dtype, random_mask in variants:
            case = ContractCase(name, example, dtype, random_mask)
            out.append(pytest.param(case, id=str(case)))
    return out


def run_contract_case(case: ContractCase) -> None:
    """``verify_contract`` for one case; float32 cases with the declared mask also check the config round trip."""
    example = case.example
    layer = example.layer
    contract = dict(example.contract)
    x, constants = example_input(example, random_mask=case.random_mask)
    if case.dtype in _LOW_PRECISION:
        layer = copy.deepcopy(layer).to(case.dtype)
        x = x.to(case.dtype)
        low = tolerances(case.dtype)
        for key, value in low.items():
            contract[key] = max(contract.get(key, 0.0), value)
        # The receptive field does not depend on the dtype, and low precision blurs the Jacobian.
        contract["test_receptive_field"] = False
    layer.train(example.training)
    torch.manual_seed(0)
    y = verify_contract(layer, x, training=example.training, constants=constants, **contract)
    if case.dtype in _LOW_PRECISION:
        expected = layer.get_output_spec(x.channel_spec, constants=constants).dtype
        assert y.dtype == expected, f"{example.label}: output dtype {y.dtype}, declared {expected}"
    if case.dtype == torch.float32 and case.random_mask == example.random_mask and example.config_round_trip:
        check_config_round_trip(example)


def steppable_examples(plugin: str) -> list[Any]:
    """pytest params: the examples of ``plugin`` that can step (compile and export checks)."""
    import pytest

    return [
        pytest.param(ex, id=ex.label)
        for _, ex in registry.examples(plugin)
        if ex.layer.supports_step and not ex.contract.get("stream_constants") and not ex.training
    ]


def _fresh_step_fn(layer: Any, constants: Any) -> Any:
    def step_fn(xb: Any, state: Any) -> Any:
        return layer.step(xb, state, training=False, constants=constants)

    # A new code object per layer, so dynamo's per-code cache never hits its limit.
    return types.FunctionType(step_fn.__code__.replace(), step_fn.__globals__, "step_fn", None, step_fn.__closure__)


def check_step_compiles(example: LayerExample, *, backend: str = "eager") -> None:
    """``step`` under ``torch.compile(fullgraph=True, dynamic=True)`` equals eager ``step`` for two
    block lengths (symbolic sizes: shape arithmetic in ``step`` must stay traceable)."""
    layer = example.layer.eval()
    x, constants = example_input(example)
    block = layer.block_size
    x = x.pad_to_multiple(3 * block)
    compiled = torch.compile(_fresh_step_fn(layer, constants), fullgraph=True, dynamic=True, backend=backend)
    state = eager_state = layer.get_initial_state(x.values.shape[0], x.channel_spec, constants=constants)
    for start, stop in ((0, block), (block, 3 * block)):
        y, state = compiled(x[:, start:stop], state)
        y_eager, eager_state = layer.step(x[:, start:stop], eager_state, constants=constants)
        assert torch.equal(y.mask, y_eager.mask), f"{example.label}: compiled step mask differs"
        torch.testing.assert_close(y.values, y_eager.values, equal_nan=True)


def _stream_inputs(example: LayerExample, steps: int) -> tuple[Any, Any, int]:
    layer = example.layer.eval()
    x, constants = example_input(example)
    block = layer.block_size
    gen = torch.Generator().manual_seed(5)
    batch, time = x.values.shape[0], steps * block
    long = random_sequence(
        batch, time, *x.channel_shape, dtype=x.dtype, random_mask=True, high=example.int_high, generator=gen
    )
    if callable(example.constants):  # side inputs as long as the stream (a conditioning sequence)
        constants = example.constants(batch, time)
    return long, constants, block


def check_step_exports(example: LayerExample, *, steps: int = 100) -> None:
    """``sl.export_step`` (``torch.export`` of a :class:`~sl.deploy.StreamingModule`) over a
    ``steps``-block stream equals eager ``step`` (float32: 1e-6)."""
    from sl.deploy import export_step

    layer = example.layer.eval()
    x, constants, block = _stream_inputs(example, steps)
    program, module = export_step(layer, x.values.shape[0], x.channel_spec, constants=constants)
    run = program.module()
    flat = module.initial_state()
    state = layer.get_initial_state(x.values.shape[0], x.channel_spec, constants=constants)
    tol = 1e-6 if x.dtype in (torch.float32, torch.float64) else 1e-5
    with torch.no_grad():
        for start in range(0, x.values.shape[1], block):
            xb = x[:, start : start + block]
            values, mask, *flat = run(xb.values, xb.mask, *flat)
            yb, state = layer.step(xb, state, constants=constants)
            assert torch.equal(mask, yb.mask), f"{example.label}: exported step mask differs at block {start}"
            torch.testing.assert_close(values, yb.values, rtol=tol, atol=tol, equal_nan=True)
    pytree.tree_map(
        lambda a, b: torch.testing.assert_close(a, b, rtol=tol, atol=tol), tuple(flat), module.flatten_state(state)
    )


def check_step_replays(example: LayerExample, *, steps: int = 12) -> None:
    """:func:`sl.replay_step` over a stream (single blocks, then double ones: three captured
    layouts) equals eager ``step`` block for block and in the final state (float32: 1e-6), and
    every step is captured (a step that falls back to eager fails here)."""
    import warnings

    from sl.replay import replay_step

    layer = example.layer.eval()
    x, constants, block = _stream_inputs(example, steps)
    replayed = replay_step(layer, constants=constants)
    state = ours = layer.get_initial_state(x.values.shape[0], x.channel_spec, constants=constants)
    tol = 1e-6 if x.dtype in (torch.float32, torch.float64) else 1e-5
    half = (steps // 2) * block
    cuts = [(t, t + block) for t in range(0, half, block)]
    cuts += [(t, t + 2 * block) for t in range(half, steps * block - 2 * block + 1, 2 * block)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for start, stop in cuts:
            xb = x[:, start:stop]
            yb, state = layer.step(xb, state, constants=constants)
            got, ours = replayed(xb, ours)
            assert torch.equal(got.mask, yb.mask), f"{example.label}: replayed step mask differs at {start}"
            torch.testing.assert_close(got.values, yb.values, rtol=tol, atol=tol, equal_nan=True)
    pytree.tree_map(lambda a, b: torch.testing.assert_close(a, b, rtol=tol, atol=tol), ours, state)


def check_step_onnx(example: LayerExample, tmp_path: Any, *, steps: int = 30) -> None:
    """ONNX export (``sl.export_onnx``) run in onnxruntime over a stream equals eager ``step``.

    Skips when onnxruntime is not installed or the example says why it cannot export
    (``LayerExample.onnx``).
    """
    import pytest

    if example.onnx is not None:
        pytest.skip(f"{example.label} does not export to ONNX: {example.onnx}")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    from sl.deploy import export_onnx

    layer = example.layer.eval()
    x, constants, block = _stream_inputs(example, steps)
    path = str(tmp_path / "step.onnx")
    module = export_onnx(layer, x.values.shape[0], x.channel_spec, path, constants=constants)
    session = ort.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    flat = [t.numpy() for t in module.initial_state()]
    state = layer.get_initial_state(x.values.shape[0], x.channel_spec, constants=constants)
    with torch.no_grad():
        for start in range(0, x.values.shape[1], block):
            xb = x[:, start : start + block]
            feeds = dict(zip(names, [xb.values.numpy(), xb.mask.numpy(), *flat]))
            values, mask, *flat = session.run(None, feeds)
            yb, state = layer.step(xb, state, constants=constants)
            assert (mask == yb.mask.numpy()).all(), f"{example.label}: ONNX step mask differs at block {start}"
            np.testing.assert_allclose(values, yb.values.numpy(), rtol=1e-5, atol=1e-5)


def check_plugin_installed(plugin: str, *, distribution: str, module: str) -> None:
    """The plugin is discovered from its entry point, loads, registers layers that its package
    exports from its top level, resolves as ``sl.<plugin>.<Name>``, and passes ``sl check``."""
    import sl
    from sl.testing.conformance import declaration_problems

    info = {p.name: p for p in registry.plugins()}
    assert plugin in info, f"plugin {plugin!r} not found; loaded: {sorted(info)}"
    assert info[plugin].ok, info[plugin].error
    assert info[plugin].distribution == distribution, info[plugin].distribution
    namespace = getattr(sl, plugin)
    assert repr(namespace) == f"<sl plugin namespace {plugin!r}>"
    package = importlib.import_module(module)
    layers = registry.plugin_layers(plugin)
    assert layers, f"plugin {plugin!r} registers no layers"
    primary = registry.primary_names()
    for name, cls in layers.items():
        assert getattr(namespace, name) is cls
        main = primary[cls].split(":", 1)[1]
        assert getattr(package, main, None) is cls, f"{module} does not export {main} at its top level"
    covered: set[type] = set()
    for _, example in registry.examples(plugin):
        covered.update(type(m) for m in example.layer.modules())
    missing = sorted(primary[cls] for cls in set(layers.values()) if cls not in covered)
    assert not missing, f"registered layers without an example in sl_example_layers: {missing}"
    problems = declaration_problems(plugin)
    assert not problems, "; ".join(f"{p.label}: {p.error}" for p in problems)
