"""The conformance kit: run the contract and the config round trip over a plugin's examples.

``python -m sl check PLUGIN`` and plugin authors' own tests call :func:`check_example`
for every ``LayerExample`` a plugin returns from ``sl_example_layers``. The kit is
strict: each example runs on its declared input and again with random non-contiguous
masks, and a plugin with no examples, duplicate example names or a failing hook fails.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import traceback
from typing import Any

import torch

from sl import registry
from sl.config import from_config
from sl.registry import LayerExample
from sl.testing.contract import verify_contract
from sl.testing.sequences import random_sequence
from sl.types import Sequence

__all__ = [
    "ExampleResult",
    "check_config_round_trip",
    "check_example",
    "check_plugin",
    "declaration_problems",
    "example_input",
]


@dataclasses.dataclass
class ExampleResult:
    plugin: str
    label: str
    ok: bool
    error: str = ""


def example_input(
    example: LayerExample, *, seed: int = 0, random_mask: bool | None = None, dtype: torch.dtype | None = None
) -> tuple[Sequence, Any]:
    """The random input sequence (and constants) an example is checked on."""
    gen = torch.Generator().manual_seed(seed)
    default = torch.int64 if example.int_high is not None else torch.float32
    x = random_sequence(
        example.batch,
        example.time,
        *example.input_shape,
        dtype=dtype or example.dtype or default,
        random_mask=example.random_mask if random_mask is None else random_mask,
        high=example.int_high,
        generator=gen,
    )
    constants = example.constants
    if callable(constants):
        constants = constants(example.batch, example.time)
    return x, constants


def check_config_round_trip(example: LayerExample) -> None:
    """``get_config`` survives JSON and rebuilds the same class with the same parameters."""
    layer = example.layer
    config = layer.get_config()
    text = json.dumps(config)
    rebuilt = from_config(json.loads(text))
    if type(rebuilt) is not type(layer):
        raise AssertionError(f"from_config built {type(rebuilt).__name__}, expected {type(layer).__name__}")
    if rebuilt.get_config() != config:
        raise AssertionError(f"config round trip changed the config:\n{config}\n->\n{rebuilt.get_config()}")
    a = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if a != b:
        raise AssertionError(f"rebuilt layer has different parameters: {a} vs {b}")


def check_example(
    example: LayerExample,
    *,
    seed: int = 0,
    random_mask: bool | None = None,
    compile: bool = False,
    round_trip: bool = True,
) -> None:
    """Raises if the example breaks the contract (or, with ``round_trip``, its config round trip).

    ``random_mask`` overrides the example's mask kind (True: random non-contiguous
    masks); ``compile`` adds the ``torch.compile(fullgraph=True)`` step check.
    """
    torch.manual_seed(seed)
    x, constants = example_input(example, seed=seed, random_mask=random_mask)
    layer = example.layer
    layer.train(example.training)
    contract = dict(example.contract)
    if compile:
        contract.setdefault("compile", True)
        contract.setdefault("compile_backend", "eager")
    verify_contract(layer, x, training=example.training, constants=constants, **contract)
    if round_trip and example.config_round_trip:
        check_config_round_trip(example)


def _error_text(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(e)).strip()


def declaration_problems(plugin: str | None = None) -> list[ExampleResult]:
    """What is wrong with a plugin's examples as declared: a failing ``sl_example_layers`` hook,
    no examples at all, duplicate names (without running any example)."""
    pairs, hook_errors = registry.collect_examples(plugin)
    results = [ExampleResult(name, "sl_example_layers", False, error) for name, error in hook_errors.items()]
    if plugin is not None and not pairs and not hook_errors:
        results.append(ExampleResult(plugin, "sl_example_layers", False, "the plugin provides no example layers"))
    counts = collections.Counter((name, ex.label) for name, ex in pairs)
    for (name, label), n in sorted(counts.items()):
        if n > 1:
            results.append(
                ExampleResult(name, label, False, f"{n} examples share the name {label!r}; give each a unique name")
            )
    return results


def check_plugin(plugin: str | None = None, *, compile: bool = False, strict: bool = True) -> list[ExampleResult]:
    """Checks every example of ``plugin`` (all plugins when None); never raises.

    ``strict`` (the default) also runs every example with random non-contiguous masks
    and reports :func:`declaration_problems` (a failing hook, no examples, duplicate
    names) as failures.
    """
    pairs, hook_errors = registry.collect_examples(plugin)
    if strict:
        results = declaration_problems(plugin)
    else:
        results = [ExampleResult(name, "sl_example_layers", False, error) for name, error in hook_errors.items()]
    for name, example in pairs:
        try:
            check_example(example, compile=compile)
            if strict and not example.random_mask:
                check_example(example, random_mask=True, round_trip=False)
            results.append(ExampleResult(name, example.label, True))
        except Exception as e:
            results.append(ExampleResult(name, example.label, False, _error_text(e)))
    return results
