"""Layer configs: ``layer.get_config()`` and ``sl.from_config(config)``.

A config is a JSON-able dict ``{"type": <registry name>, **constructor args}``.
Constructor arguments are captured automatically when a layer is built (the base
class wraps each subclass ``__init__``), so a new layer gets a config round trip
without writing any code. Nested layers (combinator children) become nested
configs. Values JSON cannot hold are tagged: ``{"__dtype__": "float32"}``,
``{"__fraction__": "1/2"}``, ``{"__float__": "inf"}``, ``{"__tensor__": [...], "dtype": ...}``,
``{"__tuple__": [...]}`` and ``{"__fn__": "relu"}`` for activations from
``sl.activations``. Anything else (an arbitrary Python callable, say) makes
``get_config`` raise a ``TypeError`` naming the layer and the argument.

Configs may come from strangers, so :func:`from_config` only builds registered
layers unless ``allow_import=True``, and it refuses non-JSON values, deep nesting,
oversized documents and layers whose parameters would exceed ``max_parameters``
(measured by building the layer on the ``meta`` device first, which allocates nothing).
"""

from __future__ import annotations

import difflib
import enum
import fractions
import functools
import importlib
import inspect
import itertools
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from sl.validation import check_float_dtype

if TYPE_CHECKING:
    from sl.layer import SequenceLayer

__all__ = [
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_PARAMETERS",
    "bind_arguments",
    "capture_init_args",
    "construct",
    "decode_value",
    "encode_value",
    "from_config",
    "layer_config",
]

# Arguments that describe placement, not the layer: never part of a config.
_EXCLUDED_ARGS = frozenset({"device"})

MAX_CONFIG_DEPTH = 64
"""Deepest nesting of lists and dicts :func:`from_config` accepts."""
MAX_CONFIG_NODES = 1_000_000
"""Most values (dict entries and list items, counted recursively) in one config."""
MAX_PARAMETERS = 2**31
"""Default limit on parameter and buffer elements of a layer built by :func:`from_config`."""
_MAX_STRING = 100_000

# Keyword names people bring from torch.nn or the reference that sl spells differently.
_SYNONYMS = {
    "out_features": "features",
    "use_bias": "bias",
    "embedding_dim": "dimension",
    "dim": "axis",
    "epsilon": "eps",
    "filters": "out_channels",
    "dilation_rate": "dilation",
    "strides": "stride",
    "num_units": "features",
    "units": "features",
    "n_fft": "fft_length",
    "hop_length": "frame_step",
    "win_length": "frame_length",
    "window": "window_fn",
    "num_layers": "num_repeats",
}


# -- binding constructor arguments ------------------------------------------------------


def _unexpected_keyword(owner: str, name: str, params: Mapping[str, inspect.Parameter]) -> str:
    accepted = [p for p in params if p != "self" and params[p].kind not in (inspect.Parameter.VAR_POSITIONAL,)]
    hint = ""
    synonym = _SYNONYMS.get(name)
    if synonym is not None and synonym in params:
        hint = f" sl calls it {synonym!r}."
    else:
        close = difflib.get_close_matches(name, accepted, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return f"{owner}() got an unexpected keyword argument {name!r}.{hint} {owner} accepts {accepted}."


def bind_arguments(
    signature: inspect.Signature, owner: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Binds a call to ``signature`` (an ``__init__`` with ``self``) as ``{name: value}``.

    Defaults are filled in, ``**kwargs`` entries are merged in, ``*args`` become a list.
    A wrong call raises a TypeError naming ``owner`` (with the right name for a keyword
    sl spells differently, e.g. ``out_features`` -> ``features``).
    """
    params = signature.parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_var_kw:
        for name in kwargs:
            if name not in params or params[name].kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError(_unexpected_keyword(owner, name, params))
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{owner}(): {e}") from None
    bound.apply_defaults()
    recorded: dict[str, Any] = {}
    for name, param in list(params.items())[1:]:
        if name not in bound.arguments:
            continue
        value = bound.arguments[name]
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            recorded.update(value)
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            recorded[name] = list(value)
        else:
            recorded[name] = value
    return recorded


def construct(cls: type, arguments: Mapping[str, Any]) -> Any:
    """Calls ``cls`` with recorded ``arguments`` (the inverse of :func:`bind_arguments`)."""
    kwargs = dict(arguments)
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    var_pos = next((n for n, p in params.items() if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    positional: list[Any] = []
    if var_pos is not None and var_pos in kwargs:
        # Parameters before *args must then be passed positionally too.
        for name, p in params.items():
            if name == "self":
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                break
            if name in kwargs:
                positional.append(kwargs.pop(name))
        values = kwargs.pop(var_pos)
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{cls.__name__}: argument {var_pos!r} must be a list; got {type(values).__name__}.")
        positional.extend(values)
    return cls(*positional, **kwargs)


def _bool_parameters(signature: inspect.Signature) -> tuple[str, ...]:
    """The parameters annotated plain ``bool``: a flag given as ``"false"`` or ``0`` (a hand-written
    config) would otherwise be read by truthiness, so every layer's flags are checked in one place."""
    return tuple(
        name
        for name, p in signature.parameters.items()
        if p.annotation in ("bool", bool)
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def _has_parameter_dtype(signature: inspect.Signature) -> bool:
    """``device=`` and ``dtype=`` together are torch's factory arguments for the layer's parameters,
    which torch can only make floating or complex (its own error for ``torch.int32`` names no layer)."""
    return "dtype" in signature.parameters and "device" in signature.parameters


def capture_init_args(init: Callable[..., None]) -> Callable[..., None]:
    """Wraps ``__init__`` to record the outermost call's bound arguments on the instance."""
    signature = inspect.signature(init)
    flags = _bool_parameters(signature)
    parameter_dtype = _has_parameter_dtype(signature)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_sl_init_args" not in self.__dict__:
            recorded = bind_arguments(signature, type(self).__name__, args, kwargs)
            for name in flags:
                value = recorded.get(name)
                if not isinstance(value, bool):
                    raise TypeError(
                        f"{type(self).__name__} expects {name} to be a bool (True or False); got "
                        f"{type(value).__name__} ({value!r})."
                    )
            if parameter_dtype:
                check_float_dtype(type(self).__name__, "dtype", recorded.get("dtype"), complex_ok=True)
            for name in _EXCLUDED_ARGS:
                recorded.pop(name, None)
            object.__setattr__(self, "_sl_init_args", recorded)
        init(self, *args, **kwargs)

    __init__.__sl_captures__ = True  # type: ignore[attr-defined]
    return __init__


# -- encoding ---------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encode_value(value: Any, *, where: str) -> Any:
    """Turns one constructor argument into JSON-able data (see module docstring)."""
    from sl.layer import SequenceLayer

    if isinstance(value, SequenceLayer):
        return value.get_config()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, enum.Enum):
        return encode_value(value.value, where=where)
    if isinstance(value, torch.dtype):
        return {"__dtype__": _dtype_name(value)}
    if isinstance(value, fractions.Fraction):
        return {"__fraction__": str(value)}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.detach().cpu().tolist(), "dtype": _dtype_name(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v, where=where) for v in value]}
    if isinstance(value, list):
        return [encode_value(v, where=where) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where}: dict arguments need string keys to be serialised; got {list(value)!r}.")
        return {k: encode_value(v, where=where) for k, v in value.items()}
    if callable(value):
        from sl import activations

        name = activations.name_of(value)
        if name is not None:
            return {"__fn__": name}
    try:  # numpy scalars and arrays
        import numpy as np

        if isinstance(value, np.generic):
            return encode_value(value.item(), where=where)
        if isinstance(value, np.ndarray):
            return encode_value(torch.as_tensor(value), where=where)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, torch.nn.Module):
        raise TypeError(
            f"{where} is a torch module ({type(value).__name__}), which cannot be written to a config: only sl "
            "layers can. Override get_config (or pass the module's sizes instead of the module)."
        )
    raise TypeError(
        f"{where} is a {type(value).__name__} ({value!r:.80}), which cannot be written to a config. "
        "Use a registered activation name, a layer, or plain JSON data instead."
    )


def layer_config(layer: SequenceLayer) -> dict[str, Any]:
    from sl import registry

    args = layer.__dict__.get("_sl_init_args")
    if args is None:
        raise TypeError(
            f"{type(layer).__name__} has no captured constructor arguments; its __init__ must run "
            "through SequenceLayer (call super().__init__())."
        )
    config: dict[str, Any] = {"type": registry.name_of(type(layer))}
    for key, value in layer.normalize_config(dict(args)).items():
        config[key] = encode_value(value, where=f"{type(layer).__name__}.{key}")
    return config


# -- decoding ---------------------------------------------------------------------------


def _check_json(config: Any) -> None:
    """Only JSON data, nested at most MAX_CONFIG_DEPTH deep, at most MAX_CONFIG_NODES values."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(config, "config", 0)]
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ValueError(f"Config has more than {MAX_CONFIG_NODES} values; refusing to decode it.")
        if depth > MAX_CONFIG_DEPTH:
            raise ValueError(f"Config nests deeper than {MAX_CONFIG_DEPTH} levels (at {path}); refusing to decode it.")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ValueError(f"Config keys must be strings; {path} has key {k!r}.")
                stack.append((v, f"{path}.{k}", depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str):
            if len(value) > _MAX_STRING:
                raise ValueError(f"Config string at {path} is {len(value)} characters long; refusing to decode it.")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"Config value at {path} is {value!r}, which JSON cannot hold (use {{'__float__': ...}})."
                )
        elif value is not None and not isinstance(value, (bool, int)):
            raise ValueError(
                f"Config value at {path} is a {type(value).__name__} ({value!r:.80}); configs hold JSON data only "
                "(dict, list, str, int, float, bool, None)."
            )


def decode_value(value: Any, *, allow_import: bool = False) -> Any:
    """Inverse of :func:`encode_value`; nested ``{"type": ...}`` dicts become layers."""
    if isinstance(value, list):
        return [decode_value(v, allow_import=allow_import) for v in value]
    if not isinstance(value, Mapping):
        return value
    if "type" in value and isinstance(value["type"], str):
        return _build(value, None, allow_import)
    if "__dtype__" in value:
        name = value["__dtype__"]
        dtype = getattr(torch, name, None) if isinstance(name, str) else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"Config names an unknown dtype {name!r}.")
        return dtype
    if "__fraction__" in value:
        return fractions.Fraction(value["__fraction__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__tensor__" in value:
        return torch.tensor(value["__tensor__"], dtype=decode_value({"__dtype__": value["dtype"]}))
    if "__tuple__" in value:
        return tuple(decode_value(v, allow_import=allow_import) for v in value["__tuple__"])
    if "__fn__" in value:
        from sl import activations

        return activations.get(value["__fn__"])
    return {k: decode_value(v, allow_import=allow_import) for k, v in value.items()}


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*$")


def _is_concrete_layer(cls: type) -> bool:
    from sl.layer import SequenceLayer

    if inspect.isabstract(cls):
        return False
    # A base class or mixin implements neither layer() nor layer_with_emits().
    base: Any = cls
    return not (base.layer is SequenceLayer.layer and base.layer_with_emits is SequenceLayer.layer_with_emits)


def _resolve_type(name: str, allow_import: bool) -> type:
    from sl import registry
    from sl.layer import SequenceLayer

    try:
        return registry.get(name)
    except KeyError as e:
        lookup_error = e.args[0]
    if ":" not in name or registry.namespace(name.split(":", 1)[0]) is not None:
        raise ValueError(f"Config type {name!r} is not a registered layer: {lookup_error}")
    if not allow_import:
        raise ValueError(
            f"Config type {name!r} is not a registered layer; it names an import path. Configs only build "
            "registered layers unless you pass allow_import=True (do that only for configs you trust: it "
            "imports the named module)."
        )
    # Checked before anything is imported: dotted public identifiers only.
    if not _IMPORT_PATH.match(name):
        raise ValueError(f"Config type {name!r} is not an import path of the form 'package.module:ClassName'.")
    module_name, qualname = name.split(":", 1)
    if any(part.startswith("_") for part in qualname.split(".")) or any(
        part.startswith("__") for part in module_name.split(".")
    ):
        raise ValueError(f"Config type {name!r} names a private class; configs build public layers only.")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"Config type {name!r} could not be imported: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, SequenceLayer)):
        raise ValueError(f"Config type {name!r} does not name a SequenceLayer.")
    if not _is_concrete_layer(obj):
        raise ValueError(f"Config type {name!r} names an abstract base class or mixin, not a layer.")
    return obj


def _build(config: Mapping[str, Any], expected_type: type | None, allow_import: bool) -> SequenceLayer:
    from sl.layer import SequenceLayer

    if not isinstance(config, Mapping) or not isinstance(config.get("type"), str):
        raise ValueError(f"A layer config must be a dict with a string 'type'; got {config!r:.200}.")
    cls = _resolve_type(config["type"], allow_import)
    if expected_type is not None and expected_type is not SequenceLayer and not issubclass(cls, expected_type):
        raise ValueError(f"Config describes {cls.__name__}, not {expected_type.__name__}.")
    kwargs = {k: decode_value(v, allow_import=allow_import) for k, v in config.items() if k != "type"}
    try:
        return construct(cls, kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as e:
        raise type(e)(f"Could not build {cls.__name__} from config: {e}") from e


def from_config(
    config: Mapping[str, Any],
    *,
    expected_type: type | None = None,
    allow_import: bool = False,
    max_parameters: int | None = MAX_PARAMETERS,
) -> SequenceLayer:
    """Builds a layer (recursively) from ``get_config()`` output.

    Only registered layer names resolve, unless ``allow_import=True`` lets a
    ``"package.module:ClassName"`` type import its module (checked before importing:
    a public concrete SequenceLayer). ``max_parameters`` bounds the parameter and
    buffer elements (None: no limit); the layer is built on the meta device first to
    count them without allocating.
    """
    _check_json(config)
    if max_parameters is not None:
        with torch.device("meta"):
            probe = _build(config, expected_type, allow_import)
        size = sum(t.numel() for t in itertools.chain(probe.parameters(), probe.buffers()))
        if size > max_parameters:
            raise ValueError(
                f"Config for {type(probe).__name__} would allocate {size:,} parameter and buffer elements, more "
                f"than max_parameters={max_parameters:,}; pass a larger max_parameters if you trust it."
            )
    return _build(config, expected_type, allow_import)
