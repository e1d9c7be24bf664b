"""The plugin manager: default plugins, entry points in group "edgeimg", allow and deny lists.

Plugins load once, lazily, on first use. A plugin that raises while importing or registering is
recorded with its error and left out; the rest keep working.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from edgeimg import hookspecs

DEFAULT_PLUGINS = (
    "edgeimg.backends.onnxruntime",
    "edgeimg.backends.openvino",
    "edgeimg.backends.torch",
    "edgeimg.backends.tensorrt",
    "edgeimg.backends.triton",
    "edgeimg.writers",
)
ENTRY_POINT_GROUP = "edgeimg"


class PluginError(Exception):
    """The installed plugins cannot be used together (for example, two claim one model name)."""


class UnknownName(Exception):
    """A model, backend or writer name that no plugin registered; says which names exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        names = ", ".join(sorted(known)) or "none installed"
        super().__init__(f"unknown {kind} {name!r}; available: {names}")


@dataclass
class PluginInfo:
    """One plugin as `edgeimg plugins` shows it."""

    name: str
    default: bool
    module: str = ""
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    #: the SDK versions the plugin declares (`SDK_REQUIRES`), None when it declares none
    sdk_requires: str | None = None

    @property
    def sdk(self) -> str:
        """Compatibility with this edgeimg's SDK as `edgeimg plugins` shows it."""
        if self.default:
            return "built-in"
        if self.sdk_requires is None:
            return "undeclared"
        return "ok" if sdk_compatible(self.sdk_requires) else "incompatible"

    def as_dict(self) -> dict[str, Any]:
        return {
            "sdk_requires": self.sdk_requires,
            "sdk": self.sdk,
            "name": self.name,
            "default": self.default,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "error": self.error,
        }


@dataclass
class Registry:
    """Everything the loaded plugins registered."""

    manager: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    backends: dict[str, Any] = field(default_factory=dict)
    writers: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins.values() if info.error]

    def model(self, name: str) -> Any:
        if name not in self.models:
            raise UnknownName("model", name, list(self.models))
        return self.models[name]

    def backend(self, name: str) -> Any:
        if name not in self.backends:
            raise UnknownName("backend", name, list(self.backends))
        return self.backends[name]

    def writer(self, kind: str) -> Any:
        if kind not in self.writers:
            raise UnknownName("writer", kind, list(self.writers))
        return self.writers[kind]


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def new_manager() -> pluggy.PluginManager:
    """A bare plugin manager with edgeimg's hook specifications and nothing registered."""
    manager = pluggy.PluginManager("edgeimg")
    manager.add_hookspecs(hookspecs)
    return manager


def sdk_compatible(requires: str) -> bool:
    """Whether SDK_VERSION satisfies a plugin's `SDK_REQUIRES` (a PEP 440 range like ">=1,<2")."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from edgeimg.sdk import SDK_VERSION

    try:
        return SpecifierSet(requires).contains(SDK_VERSION)
    except InvalidSpecifier:
        return False


def _check_sdk(info: PluginInfo, plugin: object) -> bool:
    """Record the plugin's SDK range; False (with a one-line error) when this SDK is outside it."""
    from edgeimg.sdk import SDK_VERSION

    requires = getattr(plugin, "SDK_REQUIRES", None)
    if requires is None:
        return True
    info.sdk_requires = str(requires)
    if sdk_compatible(info.sdk_requires):
        return True
    info.error = (
        f"built for edgeimg SDK {info.sdk_requires}, this edgeimg has SDK {SDK_VERSION}; "
        "install a release of the plugin for this SDK"
    )
    return False


def _wanted(name: str, allow: set[str] | None, deny: set[str] | None) -> bool:
    return (allow is None or name in allow) and not (deny and name in deny)


def _register_defaults(registry: Registry, allow: set[str] | None, deny: set[str] | None) -> None:
    for module_name in DEFAULT_PLUGINS:
        if not _wanted(module_name, None, deny):
            continue
        module = importlib.import_module(module_name)
        registry.manager.register(module, name=module_name)
        registry.plugins[module_name] = PluginInfo(module_name, default=True, module=module_name)


def _register_entry_points(
    registry: Registry, allow: set[str] | None, deny: set[str] | None
) -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in registry.plugins or not _wanted(entry_point.name, allow, deny):
            continue
        dist = entry_point.dist
        info = PluginInfo(
            entry_point.name,
            default=False,
            module=entry_point.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        registry.plugins[entry_point.name] = info
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken plugin must not break the others
            info.error = f"failed to import: {_describe(error)}"
            continue
        if _check_sdk(info, plugin):
            registry.manager.register(plugin, name=entry_point.name)


def _collect(registry: Registry) -> None:
    """Call each register_* hook implementation on its own so that one failure stays local."""
    tables = {
        "register_models": registry.models,
        "register_backends": registry.backends,
        "register_writers": registry.writers,
    }
    for hook_name in (*tables, "register_commands"):
        for impl in getattr(registry.manager.hook, hook_name).get_hookimpls():
            registry.plugins[impl.plugin_name].hooks.append(hook_name)
    for hook_name, table in tables.items():
        for impl in getattr(registry.manager.hook, hook_name).get_hookimpls():
            info = registry.plugins[impl.plugin_name]
            added: list[tuple[str, Any]] = []

            def register(item: Any, _added: list[tuple[str, Any]] = added) -> None:
                _added.append((getattr(item, "name", None) or item.kind, item))

            try:
                impl.function(register=register)
            except Exception as error:
                info.error = f"{hook_name} raised {_describe(error)}"
                continue
            for key, item in added:
                _add(registry, table, hook_name, key, item, impl.plugin_name)


def _add(
    registry: Registry,
    table: dict[str, Any],
    hook_name: str,
    key: str,
    item: Any,
    plugin_name: str,
) -> None:
    if hook_name == "register_models":
        item = _with_plugin(item, plugin_name)
    owner = getattr(table.get(key), "plugin", None) if hook_name == "register_models" else None
    if key in table:
        kind = hook_name.removeprefix("register_").rstrip("s")
        first = owner or "another plugin"
        raise PluginError(
            f"{kind} {key!r} is registered by both {first!r} and {plugin_name!r}; "
            f"uninstall one, or set EDGEIMG_DISABLE_PLUGINS={plugin_name}"
        )
    table[key] = item


def _with_plugin(spec: Any, plugin_name: str) -> Any:
    if dataclasses.is_dataclass(spec) and not spec.plugin:
        return dataclasses.replace(spec, plugin=plugin_name)
    return spec


def load_registry(extra: list[tuple[str, object]] | None = None) -> Registry:
    """Load default plugins, entry points and `extra` (name, plugin) pairs, and collect them."""
    allow = _names_from_env("EDGEIMG_LOAD_PLUGINS")
    deny = _names_from_env("EDGEIMG_DISABLE_PLUGINS")
    registry = Registry(new_manager())
    _register_defaults(registry, allow, deny)
    _register_entry_points(registry, allow, deny)
    for name, plugin in extra or ():
        registry.manager.register(plugin, name=name)
        registry.plugins[name] = PluginInfo(name, default=False, module=repr(plugin))
    _collect(registry)
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Forget the loaded registry (tests), or install one built with `load_registry`."""
    global _registry
    _registry = registry


def add_commands(cli: Any, on_error: Callable[[str, BaseException], None]) -> None:
    """Let every plugin add click commands; a plugin that raises is reported and skipped."""
    registry = get_registry()
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as error:
            registry.plugins[
                impl.plugin_name
            ].error = f"register_commands raised {_describe(error)}"
            on_error(impl.plugin_name, error)
