"""The Backend interface every engine backend implements.

Backend modules import their runtime (onnxruntime, torch, tensorrt) lazily inside methods so
that registering and listing them stays cheap.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any


class BackendUnavailable(Exception):
    """The backend cannot run on this machine; the message says what is missing."""


class Backend:
    """Base class: subclasses set the class attributes and implement the engine methods."""

    name: str = ""
    summary: str = ""
    distribution: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    priority: int = 0

    def version(self) -> str | None:
        """The installed version of the runtime, or None when it is not installed."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def missing(self) -> str | None:
        """Why this backend cannot run here, or None when it can."""
        if self.version() is None:
            return f"{self.distribution} is not installed"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "version": self.version(),
            "precisions": list(self.precisions),
            "available": self.missing() is None,
            "missing": self.missing(),
        }
