"""The conformance kit: run the contract and the config round trip over a plugin's examples.

``python -m sl check PLUGIN`` and plugin authors' own tests call :func:`check_example`
for every ``LayerExample`` a plugin returns from ``sl_example_layers``.
"""

from __future__ import annotations

import dataclasses
import json
import traceback

import torch

from sl import registry
from sl.config import from_config
from sl.registry import LayerExample
from sl.testing.contract import verify_contract
from sl.testing.sequences import random_sequence

__all__ = ["ExampleResult", "check_example", "check_plugin", "example_input"]


@dataclasses.dataclass
class ExampleResult:
    plugin: str
    label: str
    ok: bool
    error: str = ""


def example_input(example: LayerExample, *, seed: int = 0, random_mask: bool | None = None):
    """The random input sequence (and constants) an example is checked on."""
    gen = torch.Generator().manual_seed(seed)
    dtype = example.dtype or (torch.int64 if example.int_high is not None else torch.float32)
    x = random_sequence(
        example.batch,
        example.time,
        *example.input_shape,
        dtype=dtype,
        random_mask=example.random_mask if random_mask is None else random_mask,
        high=example.int_high,
        generator=gen,
    )
    constants = example.constants
    if callable(constants):
        constants = constants(example.batch, example.time)
    return x, constants


def check_config_round_trip(example: LayerExample) -> None:
    layer = example.layer
    config = layer.get_config()
    text = json.dumps(config)
    rebuilt = from_config(json.loads(text))
    if type(rebuilt) is not type(layer):
        raise AssertionError(f"from_config built {type(rebuilt).__name__}, expected {type(layer).__name__}")
    if rebuilt.get_config() != config:
        raise AssertionError(f"config round trip changed the config:\n{config}\n->\n{rebuilt.get_config()}")
    # Same structure: identical parameter names and shapes.
    a = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if a != b:
        raise AssertionError(f"rebuilt layer has different parameters: {a} vs {b}")


def check_example(example: LayerExample, *, seed: int = 0) -> None:
    """Raises if the example breaks the contract or does not round-trip its config."""
    torch.manual_seed(seed)
    x, constants = example_input(example, seed=seed)
    layer = example.layer
    layer.train(example.training)
    verify_contract(layer, x, training=example.training, constants=constants, **example.contract)
    if example.config_round_trip:
        check_config_round_trip(example)


def check_plugin(plugin: str | None = None) -> list[ExampleResult]:
    """Checks every example of ``plugin`` (all plugins when None); never raises."""
    results = []
    try:
        pairs = registry.examples(plugin)
    except Exception as e:  # the plugin's sl_example_layers hook itself failed
        err = "".join(traceback.format_exception_only(e)).strip()
        return [ExampleResult(plugin or "?", "sl_example_layers", False, err)]
    for name, example in pairs:
        try:
            check_example(example)
            results.append(ExampleResult(name, example.label, True))
        except Exception as e:
            results.append(
                ExampleResult(name, example.label, False, "".join(traceback.format_exception_only(e)).strip())
            )
    return results
