"""The layer registry: plugins (pluggy, entry-point group ``sl.plugins``) add layers.

Loading is lazy (first lookup, never at ``import sl``), deterministic (first-party
plugins in a fixed order, then the rest sorted by name) and isolated: a plugin that
fails to import or register is recorded with its error and a warning, and every
other plugin keeps working. Environment switches, as in pytest:

* ``SL_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugin except sl-core's own;
* ``SL_PLUGINS=a,b``: load only these entry-point plugins (plus ``core``);
* ``SL_STRICT_PLUGINS=1``: a failing plugin raises instead of warning.

Every layer has a qualified name ``"plugin:Name"``; its bare name (and aliases)
resolve too unless two plugins claim it, which is an error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import threading
import traceback
import types
import warnings
from collections.abc import Iterable
from typing import Any

import pluggy

__all__ = [
    "FIRST_PARTY",
    "LayerExample",
    "LayerRegistry",
    "PluginError",
    "PluginInfo",
    "add_plugin",
    "all_layers",
    "examples",
    "get",
    "hookimpl",
    "hookspec",
    "name_of",
    "plugins",
    "reset",
]

PROJECT = "sl"
ENTRY_POINT_GROUP = "sl.plugins"
FIRST_PARTY = ("core", "dsp", "attention", "recurrent", "conv")

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginError(RuntimeError):
    """A plugin failed to load (raised only with ``SL_STRICT_PLUGINS=1``)."""


@dataclasses.dataclass
class LayerExample:
    """A small layer instance plus the input it expects, for the conformance kit.

    ``input_shape`` is the channel shape. ``int_high`` makes integer inputs in
    ``[0, int_high)``. ``constants`` may be a dict or a callable
    ``(batch, time) -> dict``. ``contract`` holds extra ``verify_contract`` keyword
    arguments (tolerances, ``stream_constants``...).
    """

    layer: Any
    input_shape: tuple[int, ...]
    dtype: Any = None
    time: int = 12
    batch: int = 2
    int_high: int | None = None
    random_mask: bool = False
    training: bool = False
    constants: Any = None
    contract: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str | None = None
    config_round_trip: bool = True

    @property
    def label(self) -> str:
        return self.name or type(self.layer).__name__


class _HookSpecs:
    @hookspec
    def sl_register_layers(self, registry: LayerRegistry) -> None:
        """Add this plugin's layers with ``registry.add(cls, name=None, aliases=())``."""

    @hookspec
    def sl_example_layers(self) -> Iterable[LayerExample]:  # type: ignore[empty-body]
        """Return small example layers (LayerExample) for the conformance kit."""

    @hookspec
    def sl_register_converters(self, converters: Any) -> None:
        """Add parameter converters (reference checkpoints -> sl) for this plugin's layers."""


@dataclasses.dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    module: str | None
    error: str | None = None
    layers: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class LayerRegistry:
    """What a plugin's ``sl_register_layers`` hook receives (scoped to that plugin)."""

    def __init__(self) -> None:
        self._by_qualified: dict[str, type] = {}
        self._bare: dict[str, list[str]] = {}
        self._names_of: dict[type, str] = {}
        self._current_plugin: str | None = None
        self._pending: list[tuple[str, str, type]] = []

    def add(self, cls: type, name: str | None = None, aliases: Iterable[str] = ()) -> None:
        """Registers ``cls`` as ``name`` (default: class name) plus ``aliases``."""
        from sl.layer import SequenceLayer

        plugin = self._current_plugin
        if plugin is None:
            raise RuntimeError("registry.add may only be called from an sl_register_layers hook.")
        if not (isinstance(cls, type) and issubclass(cls, SequenceLayer)):
            raise TypeError(f"Plugin {plugin!r} registered {cls!r}, which is not a SequenceLayer subclass.")
        primary = name or cls.__name__
        for n in (primary, *aliases):
            if not n.isidentifier():
                raise ValueError(f"Plugin {plugin!r}: layer name {n!r} is not a Python identifier.")
            qualified = f"{plugin}:{n}"
            previous = self._by_qualified.get(qualified)
            for p, pn, pcls in self._pending:  # earlier add() calls of this same hook
                if (p, pn) == (plugin, n):
                    previous = pcls
            if previous is not None and previous is not cls:
                raise ValueError(
                    f"Plugin {plugin!r} registers {n!r} twice, for {previous.__qualname__} and {cls.__qualname__}."
                )
            self._pending.append((plugin, n, cls))
        self._pending_primary = getattr(self, "_pending_primary", {})
        self._pending_primary.setdefault(cls, f"{plugin}:{primary}")

    # Commit/rollback make a failing plugin leave no half-registered layers.
    def _begin(self, plugin: str) -> None:
        self._current_plugin = plugin
        self._pending = []
        self._pending_primary = {}

    def _commit(self) -> list[str]:
        names = []
        for plugin, n, cls in self._pending:
            qualified = f"{plugin}:{n}"
            self._by_qualified[qualified] = cls
            owners = self._bare.setdefault(n, [])
            if qualified not in owners:
                owners.append(qualified)
            names.append(n)
        for cls, qualified in self._pending_primary.items():
            self._names_of.setdefault(cls, qualified)
        self._current_plugin = None
        self._pending = []
        return names

    def _rollback(self) -> None:
        self._current_plugin = None
        self._pending = []
        self._pending_primary = {}


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.pm: pluggy.PluginManager | None = None
        self.layers = LayerRegistry()
        self.plugins: dict[str, PluginInfo] = {}
        self.extra: list[tuple[str, Any]] = []


_state = _State()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    seen: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in eps:
        seen.setdefault(ep.name, ep)
    order = {name: i for i, name in enumerate(FIRST_PARTY)}
    return sorted(seen.values(), key=lambda ep: (order.get(ep.name, len(order)), ep.name))


def _record_failure(info: PluginInfo, exc: BaseException, strict: bool) -> None:
    info.error = f"{type(exc).__name__}: {exc}"
    if strict:
        raise PluginError(f"sl plugin {info.name!r} failed to load: {info.error}") from exc
    warnings.warn(
        f"sl plugin {info.name!r} failed to load and was skipped: {info.error}",
        RuntimeWarning,
        stacklevel=4,
    )


def _register_one(pm: pluggy.PluginManager, name: str, obj: Any, info: PluginInfo, strict: bool) -> None:
    try:
        pm.register(obj, name=name)
    except Exception as exc:
        _record_failure(info, exc, strict)
        return
    impls = [i for i in pm.hook.sl_register_layers.get_hookimpls() if i.plugin_name == name]
    layers = _state.layers
    layers._begin(name)
    try:
        for impl in impls:
            impl.function(registry=layers)
    except Exception as exc:
        layers._rollback()
        pm.unregister(name=name)
        _record_failure(info, exc, strict)
        info.error += "\n" + "".join(traceback.format_exception(exc)[-3:]).rstrip()  # type: ignore[operator]
        return
    info.layers = layers._commit()


def _load() -> None:
    with _state.lock:
        if _state.loaded:
            return
        _state.loaded = True
        try:
            _load_all()
        except BaseException:
            # Strict mode (or a bug): forget the partial load so the next lookup raises again
            # instead of silently working with plugins missing.
            _state.loaded = False
            _state.pm = None
            _state.layers = LayerRegistry()
            _state.plugins = {}
            raise


def _load_all() -> None:
    strict = _env_flag("SL_STRICT_PLUGINS")
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(_HookSpecs)
    _state.pm = pm
    allow: set[str] | None = None
    if os.environ.get("SL_PLUGINS", "").strip():
        allow = {p.strip() for p in os.environ["SL_PLUGINS"].split(",") if p.strip()}
    disabled = _env_flag("SL_DISABLE_PLUGIN_AUTOLOAD")

    # sl-core's own layers come first, always, whether or not metadata is installed.
    from sl import plugin as core_plugin

    core_info = PluginInfo("core", "sl-core", _version("sl-core"), core_plugin.__name__)
    _state.plugins["core"] = core_info
    _register_one(pm, "core", core_plugin, core_info, strict)

    for ep in _entry_points():
        if ep.name == "core":
            continue
        if disabled or (allow is not None and ep.name not in allow):
            continue
        dist = ep.dist.name if ep.dist is not None else None
        info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist is not None else None, ep.value)
        _state.plugins[ep.name] = info
        try:
            obj = ep.load()
        except Exception as exc:
            _record_failure(info, exc, strict)
            continue
        _register_one(pm, ep.name, obj, info, strict)

    for name, obj in _state.extra:
        info = PluginInfo(name, None, None, getattr(obj, "__name__", repr(obj)))
        _state.plugins[name] = info
        _register_one(pm, name, obj, info, strict)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def add_plugin(obj: Any, name: str) -> PluginInfo:
    """Registers an in-process plugin (a module or object with hook implementations)."""
    _load()
    with _state.lock:
        if name in _state.plugins:
            raise ValueError(f"An sl plugin named {name!r} is already loaded.")
        _state.extra.append((name, obj))
        info = PluginInfo(name, None, None, getattr(obj, "__name__", repr(obj)))
        _state.plugins[name] = info
        assert _state.pm is not None
        try:
            _register_one(_state.pm, name, obj, info, _env_flag("SL_STRICT_PLUGINS"))
        except BaseException:
            _state.extra.pop()
            del _state.plugins[name]
            raise
        return info


def reset() -> None:
    """Forgets everything loaded (tests; environment changes)."""
    global _state
    with _state.lock:
        _state = _State()


def plugins() -> list[PluginInfo]:
    _load()
    return list(_state.plugins.values())


def plugin_names() -> list[str]:
    return [p.name for p in plugins() if p.ok]


def get(name: str) -> type:
    """A layer class by bare name, alias or qualified ``plugin:Name``."""
    _load()
    layers = _state.layers
    if ":" in name:
        if name in layers._by_qualified:
            return layers._by_qualified[name]
        plugin = name.split(":", 1)[0]
        info = _state.plugins.get(plugin)
        if info is not None and info.error:
            raise KeyError(
                f"Layer {name!r} is unavailable: plugin {plugin!r} failed to load ({info.error.splitlines()[0]})."
            )
        raise KeyError(f"No layer {name!r} is registered. {_suggest(name.split(':', 1)[1])}")
    owners = layers._bare.get(name, [])
    if len(owners) == 1:
        return layers._by_qualified[owners[0]]
    if len(owners) > 1:
        raise KeyError(
            f"Layer name {name!r} is ambiguous: it is registered by {', '.join(sorted(owners))}. Use a qualified name."
        )
    raise KeyError(f"No layer named {name!r} is registered. {_suggest(name)}")


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(_state.layers._bare), n=3)
    failed = [p.name for p in _state.plugins.values() if p.error]
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    if failed:
        hint += f"Plugins that failed to load: {', '.join(failed)} (see `python -m sl plugins`)."
    return hint.strip()


def name_of(cls: type) -> str:
    """The config ``type`` for ``cls``: its bare name if unambiguous, else qualified, else an import path."""
    _load()
    qualified = _state.layers._names_of.get(cls)
    if qualified is None:
        return f"{cls.__module__}:{cls.__qualname__}"
    bare = qualified.split(":", 1)[1]
    if len(_state.layers._bare.get(bare, [])) == 1:
        return bare
    return qualified


def all_layers() -> dict[str, type]:
    """Qualified name -> class for every registered layer (aliases included)."""
    _load()
    return dict(_state.layers._by_qualified)


def plugin_layers(plugin: str) -> dict[str, type]:
    return {q.split(":", 1)[1]: c for q, c in all_layers().items() if q.split(":", 1)[0] == plugin}


def primary_names() -> dict[type, str]:
    _load()
    return dict(_state.layers._names_of)


def examples(plugin: str | None = None) -> list[tuple[str, LayerExample]]:
    """``(plugin, example)`` pairs from ``sl_example_layers`` hooks."""
    _load()
    assert _state.pm is not None
    out: list[tuple[str, LayerExample]] = []
    for impl in _state.pm.hook.sl_example_layers.get_hookimpls():
        if plugin is not None and impl.plugin_name != plugin:
            continue
        if not _state.plugins.get(impl.plugin_name, PluginInfo("", None, None, None)).ok:
            continue
        provided: Iterable[LayerExample] = impl.function() or ()  # type: ignore[assignment]
        for ex in provided:
            out.append((impl.plugin_name, ex))
    return out


def call_plugin_hook(hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Calls ``hook`` on every loaded plugin, in load order: ``[(plugin, result)]``."""
    _load()
    assert _state.pm is not None
    out = []
    for impl in getattr(_state.pm.hook, hook).get_hookimpls():
        if _state.plugins.get(impl.plugin_name) is not None and not _state.plugins[impl.plugin_name].ok:
            continue
        out.append((impl.plugin_name, impl.function(**kwargs)))
    return out


class PluginNamespace(types.SimpleNamespace):
    """``sl.dsp``: attribute access to one plugin's layers."""

    def __init__(self, plugin: str) -> None:
        super().__init__()
        object.__setattr__(self, "_plugin", plugin)

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return get(f"{self._plugin}:{name}")
        except KeyError as e:
            raise AttributeError(str(e)) from None

    def __dir__(self) -> list[str]:
        return sorted(plugin_layers(self._plugin))

    def __repr__(self) -> str:
        return f"<sl plugin namespace {self._plugin!r}>"


def namespace(plugin: str) -> PluginNamespace | None:
    _load()
    if plugin in _state.plugins:
        return PluginNamespace(plugin)
    return None
