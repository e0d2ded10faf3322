"""Layer configs: value encoding, round trips, and the errors for bad configs/arguments."""

from __future__ import annotations

import fractions
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support_layers import CausalFIR

import sl
from sl import activations, toolkit
from sl.config import decode_value, encode_value
from sl.types import PaddingMode


class Kitchen(sl.PreservesType, sl.StatelessPointwise):
    """A layer whose constructor takes every kind of value a config can hold."""

    def __init__(
        self,
        features: int,
        *,
        ratio: fractions.Fraction = fractions.Fraction(1, 2),
        limit: float = math.inf,
        floor: float = -math.inf,
        pair: tuple = (1, (2, 3)),
        table: torch.Tensor | None = None,
        activation: object = "relu",
        mode: PaddingMode | str = PaddingMode.CAUSAL,
        options: dict | None = None,
        child: sl.SequenceLayer | None = None,
        children: list | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.mode = PaddingMode(mode)
        self.activation = activations.resolve(activation)  # type: ignore[arg-type]
        self.child = child
        self.children_ = torch.nn.ModuleList(children or [])
        self.weight = torch.nn.Parameter(torch.ones(features, device=device, dtype=dtype))

    def layer(self, x, *, training=None, constants=None):
        return x.apply_values(self.activation)


def _args(layer):
    return layer._sl_init_args


def _round_trip(layer):
    text = json.dumps(layer.get_config())
    return sl.from_config(json.loads(text), allow_import=True)  # the test layers are not registered


# -- value encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, encoded",
    [
        (None, None),
        (True, True),
        (3, 3),
        ("x", "x"),
        (1.5, 1.5),
        (torch.float32, {"__dtype__": "float32"}),
        (torch.bfloat16, {"__dtype__": "bfloat16"}),
        (torch.complex64, {"__dtype__": "complex64"}),
        (torch.int8, {"__dtype__": "int8"}),
        (fractions.Fraction(3, 4), {"__fraction__": "3/4"}),
        (math.inf, {"__float__": "inf"}),
        (-math.inf, {"__float__": "-inf"}),
        ((1, (2, "a")), {"__tuple__": [1, {"__tuple__": [2, "a"]}]}),
        ([1, (2,)], [1, {"__tuple__": [2]}]),
        ({"k": (1,)}, {"k": {"__tuple__": [1]}}),
        (PaddingMode.SAME, "same"),
        (F.gelu, {"__fn__": "gelu"}),
        (torch.relu, {"__fn__": "relu"}),
        (F.relu, {"__fn__": "relu"}),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
    ],
    # Stable ids (no object addresses), so pytest-xdist workers collect the same tests.
    ids=lambda v: getattr(v, "__qualname__", None) or repr(v),
)
def test_encode_decode(value, encoded):
    enc = encode_value(value, where="T.arg")
    assert enc == encoded
    assert json.loads(json.dumps(enc)) == enc
    dec = decode_value(json.loads(json.dumps(enc)))
    if isinstance(value, PaddingMode):
        assert PaddingMode(dec) is value
    elif isinstance(value, np.generic):
        assert dec == value.item()
    elif value is F.relu:
        assert dec is torch.relu
    else:
        assert dec == value and type(dec) is type(value)


def test_nan_round_trips():
    enc = encode_value(math.nan, where="T.arg")
    assert enc == {"__float__": "nan"}
    assert math.isnan(decode_value(enc))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.complex64])
def test_tensor_encoding(dtype):
    t = (torch.arange(6).reshape(2, 3) % 2).to(dtype)
    enc = encode_value(t, where="T.table")
    assert enc["dtype"] == str(dtype).removeprefix("torch.")
    if dtype != torch.complex64:
        json.dumps(enc)
    dec = decode_value(enc)
    assert dec.dtype == dtype and torch.equal(dec, t)
    np_enc = encode_value(np.arange(3, dtype=np.int32), where="T.table")
    assert np_enc == {"__tensor__": [0, 1, 2], "dtype": "int32"}


# -- layer round trips ---------------------------------------------------------------------------


def test_kitchen_sink_round_trip():
    table = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    layer = Kitchen(
        3,
        ratio=fractions.Fraction(2, 3),
        table=table,
        activation=F.gelu,
        mode=PaddingMode.SAME,
        options={"a": [1, 2], "b": math.inf},
        child=CausalFIR(2),
        children=[CausalFIR(3), Kitchen(1)],
        device="cpu",
        dtype=torch.float64,
    )
    cfg = layer.get_config()
    assert cfg["type"].endswith("test_config:Kitchen")
    assert "device" not in cfg
    assert cfg["dtype"] == {"__dtype__": "float64"}
    assert cfg["activation"] == {"__fn__": "gelu"}
    assert cfg["mode"] == "same"
    assert cfg["child"]["type"].endswith("support_layers:CausalFIR")
    rebuilt = _round_trip(layer)
    assert type(rebuilt) is Kitchen
    assert rebuilt.get_config() == cfg
    args = _args(rebuilt)
    assert args["ratio"] == fractions.Fraction(2, 3) and isinstance(args["ratio"], fractions.Fraction)
    assert args["limit"] == math.inf and args["floor"] == -math.inf
    assert args["pair"] == (1, (2, 3)) and isinstance(args["pair"][1], tuple)
    assert torch.equal(args["table"], table) and args["table"].dtype == torch.float32
    assert args["dtype"] is torch.float64 and rebuilt.weight.dtype == torch.float64
    assert rebuilt.activation is F.gelu and rebuilt.mode is PaddingMode.SAME
    assert args["options"] == {"a": [1, 2], "b": math.inf}
    assert type(rebuilt.child) is CausalFIR and rebuilt.child.taps == 2
    assert [type(c) for c in rebuilt.children_] == [CausalFIR, Kitchen]


def test_defaults_are_recorded_and_activation_names_kept():
    cfg = Kitchen(2, activation="tanh").get_config()
    assert cfg["activation"] == "tanh"
    assert cfg["ratio"] == {"__fraction__": "1/2"}
    assert cfg["limit"] == {"__float__": "inf"}
    assert _round_trip(Kitchen(2, activation="tanh")).activation is torch.tanh


def test_nested_registered_layers_round_trip():
    layer = sl.Serial(CausalFIR(2), sl.Serial(CausalFIR(3)))
    cfg = layer.get_config()
    assert cfg["type"] == "Serial"
    rebuilt = _round_trip(layer)
    assert rebuilt.get_config() == cfg
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}


def test_class_from_config_checks_type():
    cfg = sl.Serial(CausalFIR(2)).get_config()
    assert type(sl.combinators.Serial.from_config(cfg, allow_import=True)) is sl.combinators.Serial
    with pytest.raises(ValueError, match="describes Serial, not Kitchen"):
        Kitchen.from_config(cfg, allow_import=True)


# -- errors --------------------------------------------------------------------------------------


def test_unserialisable_argument_names_layer_and_argument():
    layer = Kitchen(2, activation=lambda v: v * 2)
    with pytest.raises(TypeError, match=r"Kitchen\.activation is a function .*cannot be written to a config"):
        layer.get_config()
    with pytest.raises(TypeError, match=r"Kitchen\.options: dict arguments need string keys"):
        Kitchen(2, options={1: 2}).get_config()
    with pytest.raises(TypeError, match=r"Kitchen\.options is a object"):
        Kitchen(2, options={"a": object()}).get_config()
    # Inside a nested layer the error names the inner layer.
    with pytest.raises(TypeError, match=r"Kitchen\.activation"):
        sl.Serial(Kitchen(2, activation=lambda v: v)).get_config()


def test_unknown_type():
    with pytest.raises(ValueError, match="not a registered layer: No layer named 'NoSuchLayer' is registered"):
        sl.from_config({"type": "NoSuchLayer"})
    with pytest.raises(ValueError, match="Did you mean Serial"):
        sl.from_config({"type": "Seriall"})
    with pytest.raises(ValueError, match="could not be imported"):
        sl.from_config({"type": "no_such_module.sub:Thing"}, allow_import=True)
    with pytest.raises(ValueError, match="could not be imported"):
        sl.from_config({"type": "no_such_module:Thing"}, allow_import=True)
    with pytest.raises(ValueError, match="does not name a SequenceLayer"):
        sl.from_config({"type": "collections:OrderedDict"}, allow_import=True)


@pytest.mark.parametrize("bad", [None, [], {"features": 2}, {"type": 3}])
def test_malformed_config(bad):
    with pytest.raises(ValueError, match="must be a dict with a string 'type'"):
        sl.from_config(bad)  # type: ignore[arg-type]


def test_bad_fields():
    cfg = Kitchen(2).get_config()
    with pytest.raises(
        TypeError, match=r"Could not build Kitchen from config: Kitchen\(\) got an unexpected keyword argument 'bogus'"
    ):
        sl.from_config({**cfg, "bogus": 1}, allow_import=True)
    missing = {k: v for k, v in cfg.items() if k != "features"}
    with pytest.raises(TypeError, match="Could not build Kitchen from config"):
        sl.from_config(missing, allow_import=True)
    with pytest.raises(ValueError, match="unknown dtype 'float99'"):
        sl.from_config({**cfg, "dtype": {"__dtype__": "float99"}}, allow_import=True)
    with pytest.raises(ValueError, match="Unknown activation 'nope'"):
        sl.from_config({**cfg, "activation": {"__fn__": "nope"}}, allow_import=True)
    with pytest.raises(ValueError, match="Could not build Kitchen from config"):
        sl.from_config({**cfg, "mode": "sideways"}, allow_import=True)


def test_capture_reports_bad_constructor_call():
    with pytest.raises(TypeError, match=r"Kitchen\(\)"):
        Kitchen(1, 2, 3)  # type: ignore[misc]


@pytest.mark.parametrize("value", ["false", 0, 1, None, np.bool_(False)])
def test_flags_must_be_bools(value):
    """A flag read by truthiness would turn "false" from a hand-written config into True."""
    with pytest.raises(TypeError, match=r"Dense expects bias to be a bool \(True or False\); got"):
        sl.Dense(3, 4, bias=value)
    config = sl.Dense(3, 4).get_config()
    config["bias"] = value if not isinstance(value, np.bool_) else "False"
    with pytest.raises(TypeError, match="bias to be a bool"):
        sl.from_config(config)


@pytest.mark.parametrize("value", [True, False])
def test_sizes_refuse_bools(value):
    with pytest.raises(TypeError, match=r"Dense expects features to be an int; got bool"):
        sl.Dense(3, value)  # type: ignore[arg-type]


def test_parameter_dtype_must_be_floating():
    # device= and dtype= are the parameters' factory arguments: torch's own error names no layer.
    with pytest.raises(ValueError, match=r"Dense expects dtype to be a floating or complex dtype; got torch.int32"):
        sl.Dense(3, 4, dtype=torch.int32)
    with pytest.raises(TypeError, match=r"Embedding expects dtype to be None or a torch.dtype .*got str"):
        sl.Embedding(3, 4, dtype="float32")  # type: ignore[arg-type]
    assert sl.Dense(3, 4, dtype=torch.bfloat16).weight.dtype == torch.bfloat16
    assert sl.Cast(torch.int32).dtype == torch.int32  # a dtype that is not a parameter dtype is untouched


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), np.int64(3), torch.tensor(1.5), -math.inf])
def test_check_real_takes_real_numbers(value):
    assert toolkit.check_real("Layer", "scale", value, finite=False) == float(value)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, r"Layer expects scale to be a number; got bool"),
        ("0.5", TypeError, r"Layer expects scale to be a number; got str"),
        (1j, TypeError, r"got complex"),
        (torch.tensor([1.0, 2.0]), TypeError, r"got Tensor"),
        (torch.tensor(True), TypeError, r"got Tensor"),
        (None, TypeError, r"got NoneType"),
        (math.nan, ValueError, r"Layer expects scale to be a finite number; got nan"),
        (math.inf, ValueError, r"finite number; got inf"),
    ],
)
def test_check_real_refuses_what_float_would_quietly_take(value, error, match):
    with pytest.raises(error, match=match):
        toolkit.check_real("Layer", "scale", value)


def test_check_real_optional_and_check_float_dtype():
    assert toolkit.check_real("Layer", "cap", None, optional=True) is None
    with pytest.raises(TypeError, match=r"Layer expects cap to be None or a number; got str"):
        toolkit.check_real("Layer", "cap", "1", optional=True)
    assert toolkit.check_float_dtype("Layer", "compute_dtype", None) is None
    assert toolkit.check_float_dtype("Layer", "compute_dtype", torch.bfloat16) is torch.bfloat16
    assert toolkit.check_float_dtype("Layer", "compute_dtype", torch.complex64, complex_ok=True) is torch.complex64
    with pytest.raises(TypeError, match=r"Layer expects compute_dtype to be None or a torch.dtype .*got str"):
        toolkit.check_float_dtype("Layer", "compute_dtype", "float32")
    with pytest.raises(ValueError, match=r"Layer expects compute_dtype to be a floating dtype; got torch.int32"):
        toolkit.check_float_dtype("Layer", "compute_dtype", torch.int32)
    with pytest.raises(ValueError, match=r"a floating dtype; got torch.complex64"):
        toolkit.check_float_dtype("Layer", "compute_dtype", torch.complex64)


# -- configs from strangers -------------------------------------------------------------------------


def test_import_paths_need_an_explicit_opt_in_checked_before_importing(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport sl\nclass Layer(sl.Identity):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="allow_import=True"):
        sl.from_config({"type": "evil_module:Layer"})
    assert not marker.exists()  # refused before anything was imported
    # Nested configs are held to the same rule.
    with pytest.raises(ValueError, match="allow_import=True"):
        sl.from_config({"type": "Serial", "layers": [{"type": "evil_module:Layer"}]})
    assert not marker.exists()
    for bad in ("evil_module:_Private", "evil-module:Layer", "evil_module:Layer.__init__", "os:system;"):
        with pytest.raises(ValueError):
            sl.from_config({"type": bad}, allow_import=True)
    assert not marker.exists()
    assert type(sl.from_config({"type": "evil_module:Layer"}, allow_import=True)).__name__ == "Layer"
    assert marker.exists()


@pytest.mark.parametrize("name", ["sl.layer:SequenceLayer", "sl.layer:Stateless", "sl.layer:StatelessPointwise"])
def test_abstract_bases_are_not_layers(name):
    with pytest.raises(ValueError, match="abstract base class or mixin"):
        sl.from_config({"type": name}, allow_import=True)


def test_private_classes_are_refused():
    with pytest.raises(ValueError, match="private class"):
        sl.from_config({"type": "sl.layers.time_varying:_TimeVaryingDense"}, allow_import=True)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, (lambda: 0), float("nan"), float("inf"), b"bytes", object(), torch.zeros(1)],
    ids=["set", "function", "nan", "inf", "bytes", "object", "tensor"],
)
def test_non_json_values_are_refused(value):
    with pytest.raises(ValueError, match="JSON"):
        sl.from_config({"type": "Dense", "in_features": 2, "features": value})


def test_deep_nesting_and_huge_documents_are_refused():
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError, match="nests deeper"):
        sl.from_config({"type": "Scale", "scale": deep})
    with pytest.raises(ValueError, match="characters long"):
        sl.from_config({"type": "NamedEmit", "emit_name": "x" * 1_000_000})
    with pytest.raises(ValueError, match="more than"):
        sl.from_config({"type": "Scale", "scale": [0.0] * 2_000_000})


def test_absurd_sizes_are_refused_without_allocating():
    config = {"type": "Dense", "in_features": 1_000_000, "features": 1_000_000}
    with pytest.raises(ValueError, match=r"would allocate 1,000,001,000,000 parameter.*max_parameters"):
        sl.from_config(config)
    nested = {"type": "Serial", "layers": [{"type": "Embedding", "num_embeddings": 10**9, "dimension": 64}]}
    with pytest.raises(ValueError, match="max_parameters"):
        sl.from_config(nested)
    small = sl.from_config({"type": "Dense", "in_features": 1000, "features": 1000}, max_parameters=2_000_000)
    assert small.weight.shape == (1000, 1000) and small.weight.device.type == "cpu"
    with pytest.raises(ValueError, match="max_parameters=1,000"):
        sl.from_config({"type": "Dense", "in_features": 100, "features": 100}, max_parameters=1000)


def test_torch_style_keyword_names_get_ours():
    with pytest.raises(
        TypeError, match=r"Dense\(\) got an unexpected keyword argument 'out_features'. sl calls it 'features'"
    ):
        sl.Dense(in_features=4, out_features=3)
    with pytest.raises(TypeError, match="sl calls it 'bias'"):
        sl.Dense(4, 3, use_bias=False)
    with pytest.raises(TypeError, match="sl calls it 'axis'"):
        sl.Softmax(dim=-1)
    with pytest.raises(TypeError, match="Did you mean 'features'"):
        sl.Dense(4, featuers=3)


def test_config_and_repr_show_the_real_parameter_dtype():
    layer = sl.Dense(4, 3)
    assert layer.get_config()["dtype"] is None
    layer = layer.to(torch.bfloat16)
    assert layer.get_config()["dtype"] == {"__dtype__": "bfloat16"}
    assert "dtype=torch.bfloat16" in repr(layer)
    rebuilt = sl.from_config(layer.get_config())
    assert rebuilt.weight.dtype == torch.bfloat16


def test_layer_without_init_saves_its_config():
    class Doubler(sl.StatelessPointwise):
        def layer(self, x, *, training, constants=None):
            return x.apply_values(lambda v: v * 2)

        def get_output_dtype(self, input_dtype, *, constants=None):
            return input_dtype

    assert Doubler().get_config() == {"type": f"{__name__}:test_layer_without_init_saves_its_config.<locals>.Doubler"}
