"""Engines: export → (calibrate) → compile → verify → store, and loading them for inference.

See docs/engines.md. `load_engine` is what `run` and `serve` call; `build_engine` is
`edgeimg build-engine`.
"""

from edgeimg.engine.build import BuildResult, build_engine, resolve_backend
from edgeimg.engine.errors import EngineError, EngineNotFound, VerificationFailed
from edgeimg.engine.load import Engine, find_engine, load_engine, open_engine

__all__ = [
    "BuildResult",
    "Engine",
    "EngineError",
    "EngineNotFound",
    "VerificationFailed",
    "build_engine",
    "find_engine",
    "load_engine",
    "open_engine",
    "resolve_backend",
]
