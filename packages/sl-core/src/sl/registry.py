"""The layer registry: plugins (pluggy, entry-point group ``sl.plugins``) add layers.

Loading is lazy (first lookup, never at ``import sl``), deterministic (sl-core first,
then the other first-party plugins in a fixed order, then the rest sorted by name)
and isolated: a plugin that fails to import or register (``sys.exit()`` included) is
recorded with its error and a warning, and every other plugin keeps working.

Name resolution: every layer has a qualified name ``"plugin:Name"``. A bare name (or
alias) resolves to the first-party layer that claims it (sl-core and the four domain
packages), so ``sl.Dense`` and saved ``{"type": "Dense"}`` configs keep working when a
third-party plugin registers a ``Dense`` of its own (it gets a warning naming it and
stays reachable as ``"plugin:Dense"``). A bare name claimed only by third-party
plugins resolves when one claims it and is an error naming them all otherwise.

Thread safety: no lock is held while a plugin module is imported. A plugin that looks
a layer up while its own module is being imported (directly, or in another thread
that is importing it) cannot deadlock the registry: a module that is still being
imported is registered by the first lookup after its import finishes, never half-built.

Environment switches, as in pytest:

* ``SL_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugin (sl-core's layers remain);
* ``SL_PLUGINS=a,b``: load only these entry-point plugins;
* ``SL_STRICT_PLUGINS=1``: a failing plugin raises :class:`PluginError` instead of warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import re
import sys
import threading
import traceback
import types
import warnings
import zlib
from collections.abc import Iterable
from typing import Any

import pluggy
import torch

__all__ = [
    "FIRST_PARTY",
    "LayerExample",
    "LayerRegistry",
    "PluginError",
    "PluginInfo",
    "add_plugin",
    "all_layers",
    "collect_examples",
    "examples",
    "get",
    "hookimpl",
    "hookspec",
    "name_of",
    "namespace",
    "plugin_layers",
    "plugins",
    "reset",
]

PROJECT = "sl"
ENTRY_POINT_GROUP = "sl.plugins"
# First-party plugin names and the distributions that own them.
FIRST_PARTY_DISTRIBUTIONS = {
    "core": "sl-core",
    "dsp": "sl-dsp",
    "attention": "sl-attention",
    "recurrent": "sl-recurrent",
    "conv": "sl-conv",
}
FIRST_PARTY = tuple(FIRST_PARTY_DISTRIBUTIONS)

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# A plugin is isolated from every failure a module body or hook can produce. SystemExit is
# included (a plugin calling sys.exit() must not end the host program); KeyboardInterrupt is not.
_PLUGIN_FAILURES = (Exception, SystemExit)


class PluginError(RuntimeError):
    """A plugin failed to load (raised only with ``SL_STRICT_PLUGINS=1``)."""


@dataclasses.dataclass
class LayerExample:
    """A small layer instance plus the input it expects, for the conformance kit.

    ``input_shape`` is the channel shape. ``int_high`` makes integer inputs in
    ``[0, int_high)``. ``constants`` may be a dict or a callable
    ``(batch, time) -> dict``. ``contract`` holds extra ``verify_contract`` keyword
    arguments (tolerances, ``stream_constants``...). ``name`` must be unique within a
    plugin (it defaults to the class name). ``dtypes`` are the parameter/input dtypes
    the shared suite checks the example in (float inputs; drop bfloat16 for a layer
    whose kernels lack it).
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
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    onnx: str | None = None

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
    first_party: bool = False
    error: str | None = None
    layers: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class _Entry:
    qualified: str
    cls: type
    plugin: str
    first_party: bool


class LayerRegistry:
    """What a plugin's ``sl_register_layers`` hook receives (scoped to that plugin)."""

    def __init__(self) -> None:
        self._by_qualified: dict[str, _Entry] = {}
        self._bare: dict[str, list[_Entry]] = {}
        self._names_of: dict[type, str] = {}
        self._plugin: PluginInfo | None = None
        self._pending: list[tuple[str, type]] = []
        self._pending_primary: dict[type, str] = {}

    def add(self, cls: type, name: str | None = None, aliases: Iterable[str] = ()) -> None:
        """Registers ``cls`` as ``name`` (default: class name) plus ``aliases``."""
        from sl.layer import SequenceLayer

        info = self._plugin
        if info is None:
            raise RuntimeError("registry.add may only be called from an sl_register_layers hook.")
        if not (isinstance(cls, type) and issubclass(cls, SequenceLayer)):
            raise TypeError(f"Plugin {info.name!r} registered {cls!r}, which is not a SequenceLayer subclass.")
        primary = name or cls.__name__
        for n in (primary, *aliases):
            if not isinstance(n, str) or not n.isidentifier():
                raise ValueError(f"Plugin {info.name!r}: layer name {n!r} is not a Python identifier.")
            for pn, pcls in self._pending:
                if pn == n and pcls is not cls:
                    raise ValueError(
                        f"Plugin {info.name!r} registers {n!r} twice, for {pcls.__qualname__} and {cls.__qualname__}."
                    )
            self._pending.append((n, cls))
        self._pending_primary.setdefault(cls, f"{info.name}:{primary}")

    # Commit/rollback make a failing plugin leave no half-registered layers.
    def _begin(self, info: PluginInfo) -> None:
        self._plugin = info
        self._pending = []
        self._pending_primary = {}

    def _commit(self) -> list[str]:
        info = self._plugin
        assert info is not None
        names = []
        for n, cls in self._pending:
            entry = _Entry(f"{info.name}:{n}", cls, info.name, info.first_party)
            self._by_qualified[entry.qualified] = entry
            owners = self._bare.setdefault(n, [])
            if all(o.qualified != entry.qualified for o in owners):
                owners.append(entry)
                _warn_shadowing(n, owners, entry)
            names.append(n)
        for cls, qualified in self._pending_primary.items():
            self._names_of.setdefault(cls, qualified)
        self._rollback()
        return names

    def _rollback(self) -> None:
        self._plugin = None
        self._pending = []
        self._pending_primary = {}

    def _resolve_bare(self, name: str) -> _Entry | None:
        owners = self._bare.get(name, [])
        first = [o for o in owners if o.first_party]
        if len(first) == 1:
            return first[0]
        candidates = first or owners
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise KeyError(
                f"Layer name {name!r} is ambiguous: it is registered by "
                f"{', '.join(sorted(o.qualified for o in candidates))}. Use a qualified name."
            )
        return None


def _warn_shadowing(name: str, owners: list[_Entry], new: _Entry) -> None:
    """Warns about each third-party registration of a name a first-party plugin owns."""
    first = [o for o in owners if o.first_party]
    if not first:
        return
    shadowing = [new] if not new.first_party else [o for o in owners if not o.first_party]
    for o in shadowing:
        warnings.warn(
            f"sl plugin {o.plugin!r} registers a layer named {name!r}, which first-party "
            f"{first[0].qualified} provides; {name!r} (in code and saved configs) keeps meaning "
            f"{first[0].qualified}. Use {o.qualified!r} for the plugin's layer.",
            RuntimeWarning,
            stacklevel=6,
        )


@dataclasses.dataclass
class _Candidate:
    """An entry point to load (the one chosen for its name)."""

    name: str
    entry_point: importlib.metadata.EntryPoint
    info: PluginInfo


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # guards the data below; never held during an import
        self.discovered = False
        self.complete = False
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(_HookSpecs)
        self.layers = LayerRegistry()
        self.plugins: dict[str, PluginInfo] = {}
        self.candidates: list[_Candidate] = []
        self.registered: set[str] = set()


_state = _State()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _normalize_dist(name: str | None) -> str | None:
    return None if name is None else re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _record_failure(info: PluginInfo, exc: BaseException, strict: bool) -> None:
    detail = "".join(traceback.format_exception(exc)[-3:]).rstrip()
    info.error = f"{type(exc).__name__}: {exc}\n{detail}"
    if strict:
        raise PluginError(f"sl plugin {info.name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    warnings.warn(
        f"sl plugin {info.name!r} failed to load and was skipped: {type(exc).__name__}: {exc}",
        RuntimeWarning,
        stacklevel=5,
    )


def _register(name: str, obj: Any, info: PluginInfo, strict: bool) -> None:
    """Registers a fully imported plugin object (lock held)."""
    pm = _state.pm
    try:
        pm.register(obj, name=name)
    except _PLUGIN_FAILURES as exc:
        _record_failure(info, exc, strict)
        return
    layers = _state.layers
    layers._begin(info)
    try:
        for impl in pm.hook.sl_register_layers.get_hookimpls():
            if impl.plugin_name == name:
                impl.function(registry=layers)
    except _PLUGIN_FAILURES as exc:
        layers._rollback()
        pm.unregister(name=name)
        _record_failure(info, exc, strict)
        return
    info.layers = layers._commit()


def _discover() -> None:
    """Registers sl-core and lists the entry points to load (lock held, once)."""
    if _state.discovered:
        return
    strict = _env_flag("SL_STRICT_PLUGINS")
    core_plugin = importlib.import_module("sl.plugin")  # sl-core's layers, installed metadata or not

    core = PluginInfo("core", "sl-core", _version("sl-core"), core_plugin.__name__, first_party=True)
    _state.plugins["core"] = core
    _register("core", core_plugin, core, strict)
    _state.registered.add("core")

    allow: set[str] | None = None
    if os.environ.get("SL_PLUGINS", "").strip():
        allow = {p.strip() for p in os.environ["SL_PLUGINS"].split(",") if p.strip()}
    disabled = _env_flag("SL_DISABLE_PLUGIN_AUTOLOAD")
    by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != "core" and not disabled and (allow is None or ep.name in allow):
            by_name.setdefault(ep.name, []).append(ep)
    order = {name: i for i, name in enumerate(FIRST_PARTY)}
    for name in sorted(by_name, key=lambda n: (order.get(n, len(order)), n)):
        eps = by_name[name]
        expected = _normalize_dist(FIRST_PARTY_DISTRIBUTIONS.get(name))

        def rank(ep: importlib.metadata.EntryPoint, expected: str | None = expected) -> tuple[bool, str, str]:
            dist = _normalize_dist(ep.dist.name if ep.dist is not None else None) or ""
            return (dist != expected, dist, ep.value)

        eps = sorted(eps, key=rank)
        # The same distribution can be visible twice (e.g. two paths); only distinct ones clash.
        dists = sorted({_normalize_dist(ep.dist.name if ep.dist else None) or "?" for ep in eps})
        chosen = eps[0]
        dist = chosen.dist.name if chosen.dist is not None else None
        if len(dists) > 1:
            warnings.warn(
                f"sl plugin name {name!r} is claimed by the distributions {', '.join(dists)}; loading the one "
                f"from {dist or '?'} ({chosen.value}) and ignoring the others.",
                RuntimeWarning,
                stacklevel=4,
            )
        info = PluginInfo(
            name,
            dist,
            chosen.dist.version if chosen.dist is not None else None,
            chosen.value,
            first_party=expected is not None and _normalize_dist(dist) == expected,
        )
        _state.plugins[name] = info
        _state.candidates.append(_Candidate(name, chosen, info))
    _state.discovered = True


def _initializing(module_name: str) -> bool:
    """Whether ``module_name`` or a package above it is still executing its import."""
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:i]))
        spec = getattr(module, "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


def _load() -> None:
    if _state.complete:
        return
    strict = _env_flag("SL_STRICT_PLUGINS")
    with _state.lock:
        _discover()
        todo = [c for c in _state.candidates if c.name not in _state.registered and c.info.ok]
    for candidate in todo:
        module_name = candidate.entry_point.module
        try:
            obj = candidate.entry_point.load()  # no registry lock held: imports may look layers up
        except _PLUGIN_FAILURES as exc:
            with _state.lock:
                if candidate.name not in _state.registered and candidate.info.ok:
                    _state.registered.add(candidate.name)
                    _record_failure(candidate.info, exc, strict)
            continue
        if _initializing(module_name):
            continue  # still being imported (up this thread's stack or by another thread): later
        with _state.lock:
            if candidate.name in _state.registered:
                continue
            _state.registered.add(candidate.name)
            _register(candidate.name, obj, candidate.info, strict)
    with _state.lock:
        failed = [p for p in _state.plugins.values() if p.error]
        _state.complete = all(c.name in _state.registered for c in _state.candidates)
    if strict and failed:
        # Forget the partial load, so every lookup tries (and raises) again until the plugin is fixed.
        reset()
        raise PluginError(f"sl plugin {failed[0].name!r} failed to load: {(failed[0].error or '').splitlines()[0]}")


def add_plugin(obj: Any, name: str) -> PluginInfo:
    """Registers an in-process plugin (a module or object with hook implementations)."""
    _load()
    with _state.lock:
        if name in _state.plugins:
            raise ValueError(f"An sl plugin named {name!r} is already loaded.")
        info = PluginInfo(name, None, None, getattr(obj, "__name__", repr(obj)))
        _state.plugins[name] = info
        _state.registered.add(name)
        try:
            _register(name, obj, info, _env_flag("SL_STRICT_PLUGINS"))
        except BaseException:
            del _state.plugins[name]
            _state.registered.discard(name)
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
        entry = layers._by_qualified.get(name)
        if entry is not None:
            return entry.cls
        plugin = name.split(":", 1)[0]
        info = _state.plugins.get(plugin)
        if info is not None and info.error:
            raise KeyError(
                f"Layer {name!r} is unavailable: plugin {plugin!r} failed to load ({info.error.splitlines()[0]})."
            )
        raise KeyError(f"No layer {name!r} is registered. {_suggest(name.split(':', 1)[1])}".strip())
    resolved = layers._resolve_bare(name)
    if resolved is None:
        raise KeyError(f"No layer named {name!r} is registered. {_suggest(name)}".strip())
    return resolved.cls


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(_state.layers._bare), n=3)
    failed = [p.name for p in _state.plugins.values() if p.error]
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    if failed:
        hint += f"Plugins that failed to load: {', '.join(failed)} (see `python -m sl plugins`)."
    pending = [c.name for c in _state.candidates if c.name not in _state.registered]
    if pending:
        hint += f" Plugins still being imported: {', '.join(pending)}."
    return hint.strip()


def name_of(cls: type) -> str:
    """The config ``type`` for ``cls``: its bare name if that resolves to it, else qualified, else an import path."""
    _load()
    qualified = _state.layers._names_of.get(cls)
    if qualified is None:
        return f"{cls.__module__}:{cls.__qualname__}"
    bare = qualified.split(":", 1)[1]
    try:
        entry = _state.layers._resolve_bare(bare)
    except KeyError:
        entry = None
    if entry is not None and entry.cls is cls:
        return bare
    return qualified


def all_layers() -> dict[str, type]:
    """Qualified name -> class for every registered layer (aliases included)."""
    _load()
    return {q: e.cls for q, e in _state.layers._by_qualified.items()}


def plugin_layers(plugin: str) -> dict[str, type]:
    return {q.split(":", 1)[1]: c for q, c in all_layers().items() if q.split(":", 1)[0] == plugin}


def primary_names() -> dict[type, str]:
    _load()
    return dict(_state.layers._names_of)


def collect_examples(plugin: str | None = None) -> tuple[list[tuple[str, LayerExample]], dict[str, str]]:
    """``(plugin, example)`` pairs from ``sl_example_layers`` hooks, and ``{plugin: error}``
    for hooks that failed (one plugin's broken hook never hides the others' examples)."""
    _load()
    out: list[tuple[str, LayerExample]] = []
    errors: dict[str, str] = {}
    for impl in _state.pm.hook.sl_example_layers.get_hookimpls():
        name = impl.plugin_name
        if plugin is not None and name != plugin:
            continue
        info = _state.plugins.get(name)
        if info is not None and not info.ok:
            continue
        try:
            # Seeded per plugin, on a forked RNG: an example's parameters are the same whichever
            # tests ran (or were collected) before, and the caller's RNG stream is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(name.encode()))
                provided: list[Any] = list(impl.function() or ())  # type: ignore[call-overload]
            bad = [ex for ex in provided if not isinstance(ex, LayerExample)]
            if bad:
                raise TypeError(f"sl_example_layers returned {type(bad[0]).__name__}, not LayerExample")
        except _PLUGIN_FAILURES as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        out.extend((name, ex) for ex in provided)
    return out, errors


def examples(plugin: str | None = None) -> list[tuple[str, LayerExample]]:
    """``(plugin, example)`` pairs from ``sl_example_layers`` hooks; a failing hook is a warning."""
    pairs, errors = collect_examples(plugin)
    for name, error in errors.items():
        warnings.warn(f"sl plugin {name!r}: sl_example_layers failed: {error}", RuntimeWarning, stacklevel=2)
    return pairs


def call_plugin_hook(hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Calls ``hook`` on every loaded plugin, in load order: ``[(plugin, result)]``."""
    _load()
    out = []
    for impl in getattr(_state.pm.hook, hook).get_hookimpls():
        info = _state.plugins.get(impl.plugin_name)
        if info is not None and not info.ok:
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
