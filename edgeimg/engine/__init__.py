"""Engines: export → (calibrate) → compile → verify → store, and loading them for inference.

See docs/engines.md. `load_engine` is what `run` and `serve` call; `build_engine` is
`edgeimg build-engine`. Both take the ModelSpec and the registry's backends from their caller:
nothing here reads the plugin registry.
"""

from edgeimg.engine.build import BuildResult, build_engine, resolve_backend
from edgeimg.engine.errors import EngineError, EngineNotFound, UnknownBackend, VerificationFailed
from edgeimg.engine.key import EngineTarget, engine_target
from edgeimg.engine.load import Engine, find_engine, load_engine, open_engine

__all__ = [
    "BuildResult",
    "Engine",
    "EngineError",
    "EngineNotFound",
    "EngineTarget",
    "UnknownBackend",
    "VerificationFailed",
    "build_engine",
    "engine_target",
    "find_engine",
    "load_engine",
    "open_engine",
    "resolve_backend",
]
