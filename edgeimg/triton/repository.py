"""`export-triton`: a standard Triton model repository from engines built and verified here.

    DIR/<name>/config.pbtxt              platform, tensors, batching, instance group, identity
    DIR/<name>/<version>/model.onnx      (or model.plan where a TensorRT engine was built)
    DIR/<name>/<version>/manifest.json   the engine's manifest: key, accuracy, device

A changed engine becomes the next version (Triton serves the latest); re-exporting the engine the
latest version already holds changes nothing. Version directories appear whole (staged, then
renamed) and config.pbtxt is replaced atomically after its version is in place.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeimg.durable import atomic_file
from edgeimg.engine import store
from edgeimg.engine.build import Backends
from edgeimg.engine.errors import EngineNotFound
from edgeimg.engine.load import find_engine
from edgeimg.sdk.model import ModelSpec
from edgeimg.triton import identity

CONFIG = "config.pbtxt"
#: how long Triton's dynamic batcher holds a request for others to join it
QUEUE_DELAY_US = 2000
#: engine backend → (Triton platform, the file name Triton looks for)
PLATFORMS = {
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
}


@dataclass
class Exported:
    """What one model's export did (`--json` prints these)."""

    model: str
    version: int
    key: str
    platform: str
    changed: bool
    path: Path

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def choose_engine(
    spec: ModelSpec, backends: Backends, precision: str, device: str, root: Path, max_batch: int
) -> tuple[Path, dict]:
    """The verified engine to export: TensorRT for a GPU where one was built, else ONNX Runtime."""
    candidates = ["tensorrt", "onnxruntime"] if device == "gpu" else ["onnxruntime"]
    for backend_name in candidates:
        backend = backends.get(backend_name)
        if backend is None or backend.missing():
            continue
        found = find_engine(spec, backend, precision, root, max_batch)
        if found is not None:
            return found
    raise EngineNotFound(
        f"no verified {precision} onnxruntime engine for {spec.name!r} at max batch {max_batch} "
        f"in {root}; build one: edgeimg build-engine {spec.name} --backend onnxruntime "
        f"--precision {precision} --max-batch {max_batch}"
    )


def model_config(manifest: dict[str, Any], platform: str, device: str) -> str:
    """config.pbtxt text, built with Triton's own protobuf schema (so Triton can parse it)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(
        name=manifest["model"], platform=platform, max_batch_size=identity.max_batch(manifest)
    )
    signature = identity.signature(manifest)
    for kind, tensors in (
        (config.input, signature["inputs"]),
        (config.output, signature["outputs"]),
    ):
        for name, dims in tensors:
            tensor = kind.add(name=name, data_type=getattr(pb, identity.DATA_TYPE))
            tensor.dims.extend(dims)
            if name in identity.scalar_outputs(manifest):
                tensor.reshape.SetInParent()  # dims [1] is [] in the graph
    kind = pb.ModelInstanceGroup.KIND_GPU if device == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=1)
    config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    config.version_policy.latest.num_versions = 1
    for key, value in identity.identity(manifest).items():
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def _versions(model_dir: Path) -> dict[int, dict[str, Any]]:
    """Existing versions and their manifests (a version without one counts, as an unknown)."""
    versions = {}
    for path in model_dir.iterdir() if model_dir.is_dir() else ():
        if path.is_dir() and path.name.isdigit():
            versions[int(path.name)] = store.read_manifest(path) or {}
    return versions


def export_model(
    spec: ModelSpec,
    backends: Backends,
    repo: Path,
    precision: str,
    device: str,
    root: Path,
    max_batch: int = 8,
) -> Exported:
    """Export one model's verified engine into `repo`; a no-op when its latest version holds it."""
    name = spec.name
    directory, manifest = choose_engine(spec, backends, precision, device, root, max_batch)
    platform, filename = PLATFORMS[manifest["backend"]]
    source = directory / (
        manifest["engine_file"] if platform == "tensorrt_plan" else manifest["onnx_file"]
    )
    model_dir = repo / name
    versions = _versions(model_dir)
    config = model_config(manifest, platform, device)
    latest = max(versions, default=0)
    config_path = model_dir / CONFIG
    same_config = config_path.is_file() and config_path.read_text() == config
    if versions and versions[latest].get("key") == manifest["key"] and same_config:
        return Exported(name, latest, manifest["key"], platform, False, model_dir)
    version = latest
    if not versions or versions[latest].get("key") != manifest["key"]:
        version = latest + 1
        with store.staging(model_dir / str(version)) as staged:
            shutil.copyfile(source, staged / filename)
            store.write_manifest(staged, manifest)
    with atomic_file(config_path) as handle:
        handle.write(config.encode())
    return Exported(name, version, manifest["key"], platform, True, model_dir)
