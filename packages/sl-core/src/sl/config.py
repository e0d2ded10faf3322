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
"""

from __future__ import annotations

import enum
import fractions
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sl.layer import SequenceLayer

__all__ = ["capture_init_args", "decode_value", "encode_value", "from_config", "layer_config"]

# Arguments that describe placement, not the layer: never part of a config.
_EXCLUDED_ARGS = frozenset({"device"})


def capture_init_args(init: Callable[..., None]) -> Callable[..., None]:
    """Wraps ``__init__`` to record the outermost call's bound arguments on the instance."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_sl_init_args" not in self.__dict__:
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{type(self).__name__}(): {e}") from None
            bound.apply_defaults()
            recorded: dict[str, Any] = {}
            for name, param in list(signature.parameters.items())[1:]:
                if name not in bound.arguments or name in _EXCLUDED_ARGS:
                    continue
                value = bound.arguments[name]
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    recorded.update({k: v for k, v in value.items() if k not in _EXCLUDED_ARGS})
                elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                    recorded[name] = list(value)
                else:
                    recorded[name] = value
            object.__setattr__(self, "_sl_init_args", recorded)
        init(self, *args, **kwargs)

    __init__.__sl_captures__ = True  # type: ignore[attr-defined]
    return __init__


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
    raise TypeError(
        f"{where} is a {type(value).__name__} ({value!r}), which cannot be written to a config. "
        "Use a registered activation name, a layer, or plain JSON data instead."
    )


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value`; nested ``{"type": ...}`` dicts become layers."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, Mapping):
        return value
    if "type" in value and isinstance(value["type"], str):
        return from_config(value)
    if "__dtype__" in value:
        name = value["__dtype__"]
        dtype = getattr(torch, name, None)
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
        return tuple(decode_value(v) for v in value["__tuple__"])
    if "__fn__" in value:
        from sl import activations

        return activations.get(value["__fn__"])
    return {k: decode_value(v) for k, v in value.items()}


def layer_config(layer: SequenceLayer) -> dict[str, Any]:
    from sl import registry

    args = getattr(layer, "_sl_init_args", None)
    if args is None:
        raise TypeError(
            f"{type(layer).__name__} has no captured constructor arguments; its __init__ must run "
            "through SequenceLayer (call super().__init__())."
        )
    name = registry.name_of(type(layer))
    config: dict[str, Any] = {"type": name}
    for key, value in args.items():
        config[key] = encode_value(value, where=f"{type(layer).__name__}.{key}")
    return config


def _resolve_type(name: str) -> type:
    from sl import registry

    prefix = name.split(":", 1)[0] if ":" in name else None
    if prefix is not None and ("." in prefix or registry.namespace(prefix) is None):
        # An import path "package.module:QualName" (or "module:QualName", when no plugin has
        # that name) for layers outside the registry.
        module_name, qualname = name.split(":", 1)
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"Config type {name!r} could not be imported: {e}") from None
        return obj  # type: ignore[no-any-return]
    return registry.get(name)


def from_config(config: Mapping[str, Any], *, expected_type: type | None = None) -> SequenceLayer:
    """Builds a layer (recursively) from ``get_config()`` output."""
    from sl.layer import SequenceLayer

    if not isinstance(config, Mapping) or not isinstance(config.get("type"), str):
        raise ValueError(f"A layer config must be a dict with a string 'type'; got {config!r}.")
    cls = _resolve_type(config["type"])
    if not (isinstance(cls, type) and issubclass(cls, SequenceLayer)):
        raise ValueError(f"Config type {config['type']!r} does not name a SequenceLayer.")
    if expected_type is not None and expected_type is not SequenceLayer and not issubclass(cls, expected_type):
        raise ValueError(f"Config describes {cls.__name__}, not {expected_type.__name__}.")
    kwargs = {k: decode_value(v) for k, v in config.items() if k != "type"}
    signature = inspect.signature(cls.__init__)
    params = signature.parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    var_pos = next((n for n, p in params.items() if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    unknown = [k for k in kwargs if k not in params and not accepts_var_kw]
    if unknown:
        raise ValueError(
            f"Config for {cls.__name__} has unknown field(s) {unknown}; "
            f"{cls.__name__} accepts {[p for p in params if p != 'self']}."
        )
    args: list[Any] = []
    if var_pos is not None and var_pos in kwargs:
        positional = kwargs.pop(var_pos)
        # Parameters before *args must be passed positionally too.
        for name, p in params.items():
            if name == "self":
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                break
            if name in kwargs:
                args.append(kwargs.pop(name))
        args.extend(positional)
    try:
        return cls(*args, **kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as e:
        raise type(e)(f"Could not build {cls.__name__} from config: {e}") from e
