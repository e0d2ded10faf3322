"""Loading sequence-layers (JAX/Flax) variable trees into sl models.

The reference's ``model.init(...)`` returns nested dicts ``{collection: {module: {...: array}}}``
(``params``, and e.g. ``batch_stats`` for state kept outside parameters). Leaves may be
wrapped in Flax ``Partitioned``/boxed metadata; they are unwrapped by duck typing
(``.unbox()`` / ``.value``), so neither jax nor flax is imported here: arrays only need
``numpy.asarray`` to work on them.

Each sl layer class is converted by the converter registered for it (see
:class:`ConverterRegistry`); combinators recurse into their children. Every problem (a
reference value the model has no place for, an sl parameter left without a value, a shape
that does not fit) is collected and reported together in one :class:`ConversionError`
naming full paths such as ``params/layers_0/kernel``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "ConversionError",
    "Converter",
    "ConverterRegistry",
    "Variables",
    "default_converters",
    "load_flax_params",
    "to_numpy",
]

Converter = Callable[[torch.nn.Module, "Variables"], None]


class ConversionError(ValueError):
    """A reference variable tree does not fit an sl model (all problems listed)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(f"Cannot load reference variables ({len(self.problems)} problem(s)):\n  - {lines}")


class _Missing(Exception):
    """Raised inside a converter when a required reference value is absent."""


def _unbox(x: Any) -> Any:
    # flax.linen.Partitioned / LogicallyPartitioned / nnx-style boxes.
    for _ in range(8):
        if hasattr(x, "unbox") and callable(x.unbox):
            x = x.unbox()
        elif hasattr(x, "value") and not isinstance(x, (np.ndarray, torch.Tensor)) and not hasattr(x, "shape"):
            x = x.value
        else:
            break
    return x


def _is_tree(x: Any) -> bool:
    return isinstance(x, Mapping)


def to_numpy(x: Any) -> np.ndarray:
    """A leaf (numpy/jax array, tensor, scalar, boxed value) as a numpy array."""
    x = _unbox(x)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biufc" or arr.dtype.name == "bfloat16":  # e.g. ml_dtypes.bfloat16 has kind 'V' or 'f'
        arr = arr.astype(np.float32)
    return arr


class _Context:
    def __init__(self, converters: ConverterRegistry) -> None:
        self.converters = converters
        self.consumed: set[tuple[str, ...]] = set()  # (collection, *path, name)
        self.assigned: set[int] = set()
        self.problems: list[str] = []
        self.failed_paths: list[tuple[str, ...]] = []
        self.failed_modules: set[int] = set()
        self.module_names: dict[int, str] = {}


def _fmt(collection: str, path: tuple[str, ...], name: str | None = None) -> str:
    parts = [collection, *path] + ([name] if name is not None else [])
    return "/".join(parts)


class Variables:
    """A view of one module's reference variables, across all collections.

    Converters read values with :meth:`take` (which marks them as used and fails with the
    full path when absent), look at :meth:`names`/:meth:`has`, and hand sub-trees to child
    converters with :meth:`convert_child` or assign tensors with :meth:`assign`.
    """

    def __init__(self, trees: dict[str, Any], path: tuple[str, ...], ctx: _Context, module_path: str = "") -> None:
        self._trees = trees  # collection -> subtree at ``path`` (or None)
        self.path = path
        self.module_path = module_path
        self._ctx = ctx

    # -- reading -----------------------------------------------------------------------
    @property
    def collections(self) -> list[str]:
        return [c for c, t in self._trees.items() if t is not None]

    def tree(self, collection: str = "params") -> Mapping[str, Any]:
        t = self._trees.get(collection)
        return t if t is not None else {}

    def names(self, collection: str = "params") -> list[str]:
        return list(self.tree(collection).keys())

    def has(self, name: str, collection: str = "params") -> bool:
        return name in self.tree(collection)

    def path_of(self, name: str | None = None, collection: str = "params") -> str:
        return _fmt(collection, self.path, name)

    def take(self, name: str, collection: str = "params") -> np.ndarray:
        """The array ``name`` of ``collection`` at this module (marked as used)."""
        tree = self.tree(collection)
        if name not in tree:
            present = ", ".join(sorted(tree)) or "nothing"
            self._ctx.problems.append(
                f"missing: {self.path_of(name, collection)} (needed by {self._owner()}; found {present} there)"
            )
            raise _Missing(name)
        value = tree[name]
        if _is_tree(value):
            self._ctx.problems.append(
                f"mis-shaped: {self.path_of(name, collection)} is a sub-tree, expected an array (for {self._owner()})"
            )
            raise _Missing(name)
        self._ctx.consumed.add((collection, *self.path, name))
        return to_numpy(value)

    def child(self, name: str) -> Variables:
        trees = {}
        for c, t in self._trees.items():
            sub = t.get(name) if t is not None else None
            trees[c] = sub if _is_tree(sub) else None
        mp = f"{self.module_path}.{name}" if self.module_path else name
        return Variables(trees, (*self.path, name), self._ctx, mp)

    def _owner(self) -> str:
        return getattr(self, "_owner_name", "the sl model")

    # -- writing -----------------------------------------------------------------------
    def assign(
        self,
        target: torch.Tensor | None,
        name: str,
        *,
        collection: str = "params",
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        target_name: str | None = None,
    ) -> None:
        """Copies reference value ``name`` (after ``transform``) into ``target`` in place.

        ``target=None`` means the sl layer has no such tensor (e.g. ``bias=False``): the
        reference value is then reported as extra.
        """
        if target is None:
            if self.has(name, collection):
                self._ctx.problems.append(
                    f"extra: {self.path_of(name, collection)} has no counterpart in {self._owner()} "
                    "(configured without it?)"
                )
                self._ctx.consumed.add((collection, *self.path, name))
            return
        arr = self.take(name, collection)
        src_shape = arr.shape
        if transform is not None:
            arr = transform(arr)
        tname = target_name or name
        if tuple(arr.shape) != tuple(target.shape):
            how = f" (from {tuple(src_shape)} after layout conversion)" if transform is not None else ""
            self._ctx.problems.append(
                f"mis-shaped: {self.path_of(name, collection)} has shape {tuple(arr.shape)}{how}; "
                f"{self._owner()}.{tname} expects {tuple(target.shape)}"
            )
            return
        with torch.no_grad():
            src = torch.from_numpy(np.array(arr, copy=True, order="C"))
            if not target.dtype.is_complex and src.dtype.is_complex:
                self._ctx.problems.append(
                    f"mis-typed: {self.path_of(name, collection)} is complex; {self._owner()}.{tname} is real"
                )
                return
            target.copy_(src.to(dtype=target.dtype, device=target.device))
        self._ctx.assigned.add(id(target))

    def convert_child(self, module: torch.nn.Module, name: str) -> None:
        """Converts sub-module ``module`` from the reference sub-tree ``name``."""
        _convert(module, self.child(name), self._ctx)

    def convert_as(self, module: torch.nn.Module) -> None:
        """Converts ``module`` from this same sub-tree (wrappers that add no Flax scope)."""
        _convert(module, self, self._ctx)


def _leaves(tree: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if _is_tree(tree):
        for k, v in tree.items():
            yield from _leaves(v, (*prefix, str(k)))
    else:
        yield prefix


class ConverterRegistry:
    """Maps sl layer classes to converters ``fn(module, variables) -> None``.

    Lookup walks the class's MRO, so a subclass inherits its base's converter unless it
    registers its own. Plugins add converters in their ``sl_register_converters`` hook.
    """

    def __init__(self) -> None:
        self._by_class: dict[type, Converter] = {}

    def register(self, cls: type, fn: Converter | None = None) -> Any:
        """``register(cls, fn)``, or ``@register(cls)`` as a decorator."""
        if not isinstance(cls, type):
            raise TypeError(f"ConverterRegistry.register expects a class; got {cls!r}.")

        def add(f: Converter) -> Converter:
            if not callable(f):
                raise TypeError(f"Converter for {cls.__qualname__} must be callable; got {f!r}.")
            self._by_class[cls] = f
            return f

        return add(fn) if fn is not None else add

    def lookup(self, cls: type) -> Converter | None:
        for base in cls.__mro__:
            if base in self._by_class:
                return self._by_class[base]
        return None

    def __contains__(self, cls: type) -> bool:
        return self.lookup(cls) is not None

    def classes(self) -> list[type]:
        return list(self._by_class)


def default_converters() -> ConverterRegistry:
    """A registry filled by every loaded plugin's ``sl_register_converters`` hook."""
    from sl import registry as layer_registry

    converters = ConverterRegistry()
    layer_registry.call_plugin_hook("sl_register_converters", converters=converters)
    return converters


def _own_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.named_parameters(recurse=False))


def _convert(module: torch.nn.Module, variables: Variables, ctx: _Context) -> None:
    name = type(module).__name__
    where = ctx.module_names.get(id(module)) or variables.module_path or "<root>"
    variables._owner_name = f"{name} at {where}"  # type: ignore[attr-defined]
    converter = ctx.converters.lookup(type(module))
    if converter is None:
        has_params = any(True for _ in module.parameters())
        has_values = any(True for c in variables.collections for _ in _leaves(variables.tree(c), ()))
        if has_params:
            ctx.problems.append(
                f"no converter: {name} at {where} has parameters but no converter is registered for it "
                "(a plugin provides them via sl_register_converters)"
            )
            ctx.failed_paths.append(variables.path)
            ctx.failed_modules.update(id(m) for m in module.modules())
        elif has_values:
            pass  # reported as extra values at the end
        return
    try:
        converter(module, variables)
    except _Missing:
        ctx.failed_paths.append(variables.path)
        ctx.failed_modules.update(id(m) for m in module.modules())


# Flax collections that mark a variable dict (``model.init(...)``'s result) even without
# ``params``: a layer with no parameters but running statistics (a reference BatchNormalization
# with ``use_scale=False, use_bias=False``) initialises to ``{"batch_stats": {...}}`` alone.
_COLLECTION_KEYS = ("params", "batch_stats")


def _split_collections(variables: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    if not _is_tree(variables):
        raise TypeError(f"load_flax_params expects a mapping of variables; got {type(variables).__name__}.")
    if any(k in variables for k in _COLLECTION_KEYS) and all(_is_tree(v) for v in variables.values()):
        return {str(k): v for k, v in variables.items()}
    return {"params": variables}


def load_flax_params(
    model: torch.nn.Module,
    variables: Mapping[str, Any],
    *,
    converters: ConverterRegistry | None = None,
    strict: bool = True,
) -> torch.nn.Module:
    """Copies a sequence-layers (Flax) variable tree into ``model`` in place; returns it.

    ``variables`` is what the reference's ``model.init(...)`` returns
    (``{"params": {...}, "batch_stats": {...}}``, recognised by either key) or just the
    ``params`` tree. Leaves may be numpy/jax arrays or Flax ``Partitioned`` boxes. Layouts
    are converted by the converter of each layer class (``Dense`` kernel ``[in, out]`` ->
    weight ``[out, in]``).

    Raises :class:`ConversionError` listing every missing, extra, mis-shaped value (by its
    full path, e.g. ``params/layers_0/kernel``) and every sl parameter left unset. With
    ``strict=False`` only mis-shaped values and layers without converters are errors.
    """
    trees = _split_collections(variables)
    ctx = _Context(converters if converters is not None else default_converters())
    ctx.module_names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    root = Variables(dict(trees), (), ctx)
    _convert(model, root, ctx)

    problems = list(ctx.problems)
    # Reference values nobody used.
    for collection, tree in trees.items():
        for leaf in _leaves(tree, ()):
            if (collection, *leaf) in ctx.consumed:
                continue
            if any(leaf[: len(p)] == p for p in ctx.failed_paths):
                continue  # inside a module that already failed; don't double-report
            problems.append(f"extra: {_fmt(collection, leaf)} was not used by any sl layer")
    # sl parameters nobody set.
    for mname, sub in model.named_modules():
        if id(sub) in ctx.failed_modules:
            continue  # its converter already reported why
        for pname, p in _own_tensors(sub):
            if id(p) not in ctx.assigned:
                problems.append(
                    f"unset: sl parameter {(mname + '.') if mname else ''}{pname} "
                    f"({type(sub).__name__}) received no reference value"
                )
    if not strict:
        problems = [p for p in problems if not p.startswith(("extra:", "unset:", "missing:"))]
    if problems:
        raise ConversionError(problems)
    return model
