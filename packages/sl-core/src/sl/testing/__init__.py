"""``sl.testing``: the contract harness plugin authors use in their own tests."""

from sl.testing.conformance import ExampleResult, check_example, check_plugin, example_input
from sl.testing.contract import CHECKS, ContractViolation, measure_receptive_field, verify_contract
from sl.testing.dtypes import DtypeConfig, dtype_sweep, tolerances
from sl.testing.sequences import (
    assert_sequences_close,
    assert_sequences_equal,
    fill_invalid,
    garbage_value,
    random_sequence,
    sequences_close,
)

__all__ = [
    "CHECKS",
    "ContractViolation",
    "DtypeConfig",
    "ExampleResult",
    "assert_sequences_close",
    "assert_sequences_equal",
    "check_example",
    "check_plugin",
    "dtype_sweep",
    "example_input",
    "fill_invalid",
    "garbage_value",
    "measure_receptive_field",
    "random_sequence",
    "sequences_close",
    "tolerances",
    "verify_contract",
]
