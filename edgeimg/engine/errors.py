"""Engine errors that the CLI turns into one-line messages with meaningful exit codes."""

from __future__ import annotations

from edgeimg.backends.base import BackendUnavailable
from edgeimg.errors import EdgeimgError


class EngineError(EdgeimgError):
    """An engine could not be built, verified or found (exit status 1)."""


class VerificationFailed(EngineError):
    """The engine's task metric dropped from torch FP32's by more than the model's tolerance."""

    def __init__(self, message: str, verification: dict | None = None) -> None:
        super().__init__(message)
        #: what verify.compare measured (the `--precision auto` race records it)
        self.verification = verification or {}


class EngineNotFound(EngineError):
    """No valid engine for this model, backend, precision and device; says how to build one."""


class EngineOffline(EngineError):
    """A remote engine cannot be reached now (server down, model not loaded): `run` stops with
    this one line; `serve` keeps the job pending and tries again later."""


class UnknownBackend(BackendUnavailable, EngineError):
    """A backend name that no plugin registered (exit 2 from build-engine, one line from run)."""
