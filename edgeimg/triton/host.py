"""`edgeimg host`: this box's verified engines behind a real Triton Inference Server (PyTriton).

nvidia-pytriton ships the `tritonserver` binary and its Python backend; the engines run in this
process, Triton's dynamic batcher merges the requests of all clients into engine calls, and its
own HTTP, gRPC and Prometheus metrics endpoints face the network. Each model publishes the
engine's identity as config parameters, as an exported repository does. One process, one box:
not a cluster (docs/scale.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeimg.engine.load import Engine
from edgeimg.triton import identity
from edgeimg.triton.repository import QUEUE_DELAY_US

#: left open: statistics (what the tests and dashboards read); the rest need PyTriton's token
RESTRICTED = ["shared-memory", "model-repository", "trace", "logging"]


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    address: str = "0.0.0.0"


def library_path() -> str:
    """LD_LIBRARY_PATH with this interpreter's LIBDIR first: Triton's Python-backend stub links
    libpython3.X.so, and a pyenv or conda Python keeps its own there (without it the model
    fails to load with an `_thread.RLock` error)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return os.pathsep.join([libdir, *[p for p in current if p != libdir]] if libdir else current)


def infer_function(engine: Engine) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """Triton's merged requests → one engine call per input shape → each request's slice."""
    names, outputs = engine.input_names, engine.output_names
    scalars = set(identity.scalar_outputs(engine.manifest))

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            shapes = tuple(request[name].shape[1:] for name in names)
            groups.setdefault(shapes, []).append(index)
        answers: list[dict[str, np.ndarray]] = [{} for _ in requests]
        for members in groups.values():
            arrays = [np.concatenate([requests[i][n] for i in members]) for n in names]
            results = engine.run(*arrays)
            start = 0
            for i in members:
                size = len(requests[i][names[0]])
                answers[i] = {
                    n: np.ascontiguousarray(
                        r[start : start + size].reshape(size, 1)
                        if n in scalars
                        else r[start : start + size],
                        dtype=np.float32,
                    )
                    for n, r in zip(outputs, results, strict=True)
                }
                start += size
        return answers

    return infer


def _bind(triton: Any, engine: Engine) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    manifest = engine.manifest
    signature = identity.signature(manifest)
    config = ModelConfig(
        max_batch_size=identity.max_batch(manifest),
        batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US),
    )
    triton.bind(
        model_name=manifest["model"],
        infer_func=infer_function(engine),
        inputs=[Tensor(name=n, dtype=np.float32, shape=tuple(d)) for n, d in signature["inputs"]],
        outputs=[Tensor(name=n, dtype=np.float32, shape=tuple(d)) for n, d in signature["outputs"]],
        config=config,
    )
    publish_parameters(triton, manifest["model"], identity.identity(manifest))


def publish_parameters(triton: Any, model_name: str, parameters: dict[str, str]) -> None:
    """Add `parameters` to the config PyTriton writes for `model_name`.

    PyTriton has no public way to add config parameters: its model config is built once and
    cached, so they join the backend parameters it writes. This is the one place that reaches
    into PyTriton's internals (pinned to 0.7.x in pyproject; tests/test_pytriton_fence.py).
    """
    try:
        models = [m for m in triton._model_manager.models if m.model_name == model_name]
        for model in models:
            model._get_triton_model_config().backend_parameters.update(parameters)
    except AttributeError as error:
        raise RuntimeError(
            f"this nvidia-pytriton is not the one edgeimg host was written for (0.7.x): {error}"
        ) from None
    if not models:
        raise RuntimeError(f"PyTriton did not bind model {model_name!r}")


def _stop_on_sigterm() -> None:
    """SIGTERM ends `serve` as Ctrl-C does, so tritonserver is stopped, not orphaned."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def host(engines: list[Engine], ports: Ports, ready: Callable[[], None]) -> None:
    """Serve `engines` until interrupted; `ready()` is called once every model is loaded."""
    os.environ["LD_LIBRARY_PATH"] = library_path()
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    config = TritonConfig(
        http_address=ports.address,
        http_port=ports.http,
        grpc_address=ports.address,
        grpc_port=ports.grpc,
        metrics_address=ports.address,
        metrics_port=ports.metrics,
        log_verbose=0,
        exit_on_error=True,
    )
    security = TritonSecurityConfig(restricted_endpoints=RESTRICTED)
    triton = Triton(config=config, security_config=security)
    try:
        for engine in engines:
            _bind(triton, engine)
        _stop_on_sigterm()
        triton.run()
        ready()
        triton.serve()
    finally:
        triton.stop()
