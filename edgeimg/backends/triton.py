"""Triton: the engine is a model on a remote Triton Inference Server (tritonclient, lazily).

The target is `--triton HOST:PORT` or $EDGEIMG_TRITON: gRPC by default, `http://HOST:PORT` for
HTTP, `grpcs://` or `https://` for TLS ($EDGEIMG_TRITON_CA names a CA bundle). The remote model
publishes the engine it runs (`edgeimg.triton.identity`); its key is part of this backend's
device facts, so a server that swaps the model gets a new local engine, verified again by the
same accuracy gate as any other. Only pixel tensors cross the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg import hookimpl
from edgeimg.backends.base import Backend, CompileJob, Runner
from edgeimg.engine.errors import EngineError, EngineOffline
from edgeimg.triton import identity

ENV_TARGET = "EDGEIMG_TRITON"
ENV_CA = "EDGEIMG_TRITON_CA"
SCHEMES = {
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
    "http": ("http", False),
    "https": ("http", True),
}
#: words in a server's error that mean "not now" rather than "never"
_TRANSIENT = (
    "unavailable",
    "unknown model",
    "not ready",
    "not found",
    "failed to connect",
    "connection",
    "deadline",
    "cancelled",
    "socket closed",
    "timed out",
)


@dataclass(frozen=True)
class Target:
    """Where the Triton server is and how to talk to it."""

    protocol: str
    address: str
    tls: bool

    def __str__(self) -> str:
        return f"{self.protocol}{'s' if self.tls else ''}://{self.address}"


def parse_target(text: str) -> Target:
    """`HOST:PORT` (gRPC) or `SCHEME://HOST:PORT` with scheme grpc, grpcs, http or https."""
    scheme, _, rest = text.strip().rpartition("://")
    protocol, tls = SCHEMES.get(scheme or "grpc", (None, False))
    host, _, port = rest.rpartition(":")
    if protocol is None or not host or not port.isdigit():
        raise EngineError(f"--triton {text!r}: expected HOST:PORT or grpc[s]|http[s]://HOST:PORT")
    return Target(protocol, rest, tls)


def configured_target() -> Target | None:
    text = os.environ.get(ENV_TARGET, "").strip()
    return parse_target(text) if text else None


class TritonClient:
    """One connection to a server; every failure becomes EngineOffline or EngineError, in our
    words and naming the server."""

    def __init__(self, target: Target) -> None:
        self.target = target
        ca = os.environ.get(ENV_CA) or None
        if target.protocol == "grpc":
            import tritonclient.grpc as module

            self.client = module.InferenceServerClient(
                target.address, ssl=target.tls, root_certificates=ca
            )
        else:
            import tritonclient.http as module

            options = {"ca_certs": ca} if ca else {}
            self.client = module.InferenceServerClient(
                target.address, ssl=target.tls, ssl_options=options, network_timeout=120.0
            )
        self.module = module

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return function(*args, **kwargs)
        except (InferenceServerException, OSError) as error:
            text = str(error.message() if hasattr(error, "message") else error) or repr(error)
            status = str(error.status() if hasattr(error, "status") else "") or ""
            message = f"triton at {self.target}: {what} failed: {text.splitlines()[0]}"
            if isinstance(error, OSError) or any(w in (text + status).lower() for w in _TRANSIENT):
                raise EngineOffline(message) from None
            raise EngineError(message) from None

    def config(self, model: str) -> dict[str, Any]:
        """The model's config as a dict (after checking it is loaded and ready)."""
        if not self._call("the readiness check", self.client.is_model_ready, model):
            raise EngineOffline(f"triton at {self.target}: model {model!r} is not loaded")
        if self.target.protocol == "grpc":
            return self._call(
                "reading the model config", self.client.get_model_config, model, as_json=True
            )["config"]
        return self._call("reading the model config", self.client.get_model_config, model)

    def version(self, model: str) -> str:
        """The newest version the server has loaded (requests are pinned to it)."""
        if self.target.protocol == "grpc":
            metadata = self._call(
                "reading the model metadata", self.client.get_model_metadata, model, as_json=True
            )
        else:
            metadata = self._call(
                "reading the model metadata", self.client.get_model_metadata, model
            )
        return max(metadata.get("versions") or ["1"], key=int)

    def statistics(self, model: str) -> dict[str, Any]:
        """Triton's inference statistics of the model (counts of requests and executions)."""
        if self.target.protocol == "grpc":
            return self._call(
                "reading statistics", self.client.get_inference_statistics, model, as_json=True
            )
        return self._call("reading statistics", self.client.get_inference_statistics, model)

    def infer(
        self,
        model: str,
        version: str,
        names: list[str],
        arrays: tuple[np.ndarray, ...],
        outputs: list[str],
    ) -> tuple[np.ndarray, ...]:
        inputs = []
        for name, array in zip(names, arrays, strict=True):
            item = self.module.InferInput(name, list(array.shape), "FP32")
            item.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            inputs.append(item)
        wanted = [self.module.InferRequestedOutput(name) for name in outputs]
        result = self._call(
            f"inference on {model!r} version {version}",
            self.client.infer,
            model,
            inputs,
            model_version=version,
            outputs=wanted,
        )
        return tuple(result.as_numpy(name) for name in outputs)


@dataclass
class RemoteModel:
    """A model as the server describes it."""

    name: str
    version: str
    signature: dict[str, list[tuple[str, list[int]]]]
    types: set[str]
    max_batch: int
    parameters: dict[str, str]

    @classmethod
    def read(cls, client: TritonClient, name: str) -> RemoteModel:
        config = client.config(name)
        parameters = {
            key: str(value.get("string_value", "")) if isinstance(value, dict) else str(value)
            for key, value in (config.get("parameters") or {}).items()
        }
        signature = {
            kind: [(t["name"], [int(d) for d in t.get("dims", [])]) for t in config.get(key, [])]
            for kind, key in (("inputs", "input"), ("outputs", "output"))
        }
        types = {t.get("data_type", "") for key in ("input", "output") for t in config.get(key, [])}
        version = client.version(name)
        return cls(
            name, version, signature, types, int(config.get("max_batch_size", 0)), parameters
        )

    def check(self, client: TritonClient, spec: Any) -> None:
        """Refuse a remote model that is not an edgeimg engine of these weights."""
        from edgeimg.engine.network import sha256_file

        where = f"triton at {client.target}, model {self.name!r}"
        published = {k: self.parameters.get(k) for k in identity.PARAMETERS}
        if not published["edgeimg_key"]:
            raise EngineError(
                f"{where} publishes no edgeimg engine identity (export it with "
                "edgeimg export-triton or serve it with edgeimg host)"
            )
        weights = spec.weights_path()
        expected = {
            "edgeimg_model": spec.name,
            "edgeimg_model_version": spec.version,
            "edgeimg_weights_sha256": sha256_file(weights) if weights else None,
        }
        for key, want in expected.items():
            if published[key] != want:
                field = identity.PARAMETERS[key]
                raise EngineError(
                    f"{where} runs {field} {published[key]!r}, this box has {want!r}; refused"
                )
        if self.types != {identity.DATA_TYPE} or self.max_batch < 1:
            raise EngineError(f"{where} is not a batched FP32 model; refused")


class TritonRunner:
    """Batches go to the server as one request each (split only past its max_batch_size), to
    the version that was checked: once the server unloads it, requests fail as offline, and
    `serve` opens (and verifies) the engine again."""

    def __init__(
        self, client: TritonClient, remote: RemoteModel, scalars: list[str] | tuple = ()
    ) -> None:
        self.client = client
        self.remote = remote
        self.scalars = set(scalars)
        self.inputs = [name for name, _ in remote.signature["inputs"]]
        self.outputs = [name for name, _ in remote.signature["outputs"]]

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        step = self.remote.max_batch
        parts = [
            self.client.infer(
                self.remote.name,
                self.remote.version,
                self.inputs,
                tuple(a[start : start + step] for a in arrays),
                self.outputs,
            )
            for start in range(0, len(arrays[0]), step)
        ]
        outputs = (
            parts[0]
            if len(parts) == 1
            else tuple(np.concatenate(chunks) for chunks in zip(*parts, strict=True))
        )
        return tuple(
            array.reshape(len(array)) if name in self.scalars else array
            for name, array in zip(self.outputs, outputs, strict=True)
        )


class TritonBackend(Backend):
    name = "triton"
    summary = "a remote Triton Inference Server (--triton HOST:PORT or $EDGEIMG_TRITON)"
    distribution = "tritonclient"
    precisions = ("fp32", "fp16", "int8")
    priority = -100  # never chosen by auto over an engine on this box
    engine_file = "triton.json"

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is None and configured_target() is None:
            return f"no Triton server given (--triton HOST:PORT or ${ENV_TARGET})"
        return reason

    def _client(self) -> TritonClient:
        target = configured_target()
        if target is None:
            raise EngineError(self.missing() or "no Triton server given")
        return TritonClient(target)

    def device(self) -> dict[str, Any]:
        return {"triton": str(configured_target())}

    def device_for(self, spec: Any) -> dict[str, Any]:
        """The server and the remote engine's key: a swapped remote model is a new engine."""
        client = self._client()
        remote = RemoteModel.read(client, spec.name)
        remote.check(client, spec)
        return {
            **self.device(),
            "model": spec.name,
            "remote_key": remote.parameters["edgeimg_key"],
            "remote_precision": remote.parameters["edgeimg_precision"],
        }

    def compile(self, job: CompileJob) -> Path:
        """Check the remote model against the ONNX and precision; record what was checked."""
        from edgeimg.engine.build import onnx_io

        client = self._client()
        remote = RemoteModel.read(client, job.spec.name)
        remote.check(client, job.spec)
        where = f"triton at {client.target}, model {remote.name!r}"
        if remote.parameters["edgeimg_precision"] != job.precision:
            raise EngineError(
                f"{where} runs {remote.parameters['edgeimg_precision']}, "
                f"asked for {job.precision}; refused"
            )
        graph = onnx_io(job.onnx_path)
        expected = identity.signature(graph)
        if remote.signature != expected:
            raise EngineError(
                f"{where} takes and gives {remote.signature}, the model {expected}; refused"
            )
        target = job.out_dir / self.engine_file
        record = {
            "triton": str(client.target),
            "model": remote.name,
            "max_batch_size": remote.max_batch,
            "scalar_outputs": identity.scalar_outputs(graph),
            "parameters": {k: remote.parameters[k] for k in identity.PARAMETERS},
        }
        target.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return target

    def open(self, engine_path: Path, spec: Any, manifest: dict[str, Any]) -> Runner:
        record = json.loads(engine_path.read_text())
        client = TritonClient(parse_target(record["triton"]))
        remote = RemoteModel.read(client, record["model"])
        key = record["parameters"]["edgeimg_key"]
        if remote.parameters.get("edgeimg_key") != key:
            raise EngineError(
                f"triton at {client.target}, model {remote.name!r} now runs engine "
                f"{remote.parameters.get('edgeimg_key')}, verified was {key}; build again"
            )
        return TritonRunner(client, remote, record.get("scalar_outputs", ()))


@hookimpl
def register_backends(register):
    register(TritonBackend())
