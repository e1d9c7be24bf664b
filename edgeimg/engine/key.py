"""The one engine key: a hash of exactly what makes an engine valid, known before any export.

A lookup is then a directory name (`<engines root>/<model>/<key>/`) and `build-engine` writes to
that same directory. What goes in: the model (name, version, weights sha256, implementation) and
what decides its ONNX graph (input and output names, dynamic axes, opset, export code version,
torch version), the backend and its runtime version, the precision, the shape profiles, the
calibration fingerprint (INT8 only) and the backend's device part (CPU model and ISA flags; for
GPU backends the GPU and its driver; for triton the server and the remote engine's key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeimg.backends.base import Backend, Profiles
from edgeimg.device import package_version
from edgeimg.engine import calibration
from edgeimg.engine.export import EXPORT_VERSION, OPSET
from edgeimg.engine.network import implementation, sha256_file
from edgeimg.engine.profiles import shape_profiles
from edgeimg.sdk.model import ModelSpec

#: stored in every manifest; engines keyed under another format are stale and rebuilt
KEY_FORMAT = 2
KEY_LENGTH = 16


def digest(document: dict[str, Any]) -> str:
    """The first KEY_LENGTH hex digits of the sha256 of `document` as canonical JSON."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def profiles_document(profiles: Profiles) -> dict[str, list[list[int]]]:
    """Shape profiles as JSON lists (the form manifests store them in)."""
    return {name: [list(shape) for shape in shapes] for name, shapes in profiles.items()}


def model_part(spec: ModelSpec, impl: Any) -> dict[str, Any]:
    """The model and what decides its exported graph, without exporting it."""
    weights = spec.weights_path()
    return {
        "name": spec.name,
        "version": spec.version,
        "implementation": spec.implementation,
        "weights_sha256": sha256_file(weights) if weights and weights.is_file() else None,
        "graph": {
            "inputs": list(impl.input_names),
            "outputs": list(impl.output_names),
            "dynamic_axes": {
                name: {str(axis): label for axis, label in axes.items()}
                for name, axes in impl.dynamic_axes.items()
            },
            "opset": OPSET,
            "export_version": EXPORT_VERSION,
            "torch": package_version("torch"),
        },
    }


@dataclass(frozen=True)
class EngineTarget:
    """One engine to find or build: everything its key hashes, and the key."""

    spec: ModelSpec
    impl: Any = field(repr=False)
    backend: Backend
    precision: str
    max_batch: int
    calib: tuple[Path, ...]
    profiles: Profiles
    key_inputs: dict[str, Any] = field(repr=False)

    @property
    def key(self) -> str:
        return digest(self.key_inputs)

    def directory(self, root: Path) -> Path:
        return root / self.spec.name / self.key


def engine_target(
    spec: ModelSpec,
    backend: Backend,
    precision: str,
    max_batch: int = 8,
    calib: Sequence[Path] = (),
) -> EngineTarget:
    """The engine for `spec` on `backend` at `precision` on this device; no export runs."""
    impl = implementation(spec)
    profiles = shape_profiles(impl, max_batch)
    paths = tuple(Path(p) for p in calib)
    key_inputs = {
        "format": KEY_FORMAT,
        "model": model_part(spec, impl),
        "backend": backend.name,
        "backend_version": backend.version(),
        "precision": precision,
        "profiles": profiles_document(profiles),
        "calibration": calibration.fingerprint(list(paths)) if precision == "int8" else None,
        "device": backend.device_for(spec),
    }
    return EngineTarget(spec, impl, backend, precision, max_batch, paths, profiles, key_inputs)
