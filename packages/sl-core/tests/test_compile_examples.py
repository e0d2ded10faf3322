"""Every steppable core example compiles (fullgraph, symbolic sizes) and exports.

dynamic=True makes every size symbolic, which is what torch.compile does on its own
once it sees a second block length: shape arithmetic in step must stay traceable (no
fractions.Fraction on sizes, no math.prod over generators, no untraceable dtype methods).
The eager backend keeps this fast; the graph capture is what is being tested.
"""

import types

import pytest
import torch

import sl
from sl.testing import example_input

EXAMPLES = [
    pytest.param(ex, id=ex.label)
    for plugin, ex in sl.registry.examples("core")
    if ex.layer.supports_step and not ex.contract.get("stream_constants")
]


def _fresh(layer, constants):
    def step_fn(xb, state):
        return layer.step(xb, state, training=False, constants=constants)

    # A new code object per layer, so dynamo's per-code cache never hits its limit.
    return types.FunctionType(step_fn.__code__.replace(), step_fn.__globals__, "step_fn", None, step_fn.__closure__)


@pytest.mark.parametrize("example", EXAMPLES)
def test_step_compiles_with_symbolic_sizes(example):
    layer = example.layer.eval()
    x, constants = example_input(example)
    block = layer.block_size
    x = x.pad_to_multiple(3 * block)
    compiled = torch.compile(_fresh(layer, constants), fullgraph=True, dynamic=True, backend="eager")
    state = eager_state = layer.get_initial_state(x.shape[0], x.channel_spec, constants=constants)
    for start, stop in ((0, block), (block, 3 * block)):
        y, state = compiled(x[:, start:stop], state)
        y_eager, eager_state = layer.step(x[:, start:stop], eager_state, constants=constants)
        assert torch.equal(y.mask, y_eager.mask)
        torch.testing.assert_close(y.values, y_eager.values, equal_nan=True)


class _Stepper(torch.nn.Module):
    """One step as a module: what a deployment exports (input block and state in, out)."""

    def __init__(self, layer, constants):
        super().__init__()
        self.layer = layer
        self.constants = constants

    def forward(self, x, state):
        return self.layer.step(x, state, training=False, constants=self.constants)


@pytest.mark.parametrize("example", EXAMPLES)
def test_step_exports(example):
    layer = example.layer.eval()
    x, constants = example_input(example)
    x = x.pad_to_multiple(layer.block_size)[:, : layer.block_size]
    state = layer.get_initial_state(x.shape[0], x.channel_spec, constants=constants)
    program = torch.export.export(_Stepper(layer, constants), (x, state))
    y, new_state = program.module()(x, state)
    y_eager, eager_state = layer.step(x, state, constants=constants)
    assert torch.equal(y.mask, y_eager.mask)
    torch.testing.assert_close(y.values, y_eager.values, equal_nan=True)
    torch.utils._pytree.tree_map(torch.testing.assert_close, new_state, eager_state)
