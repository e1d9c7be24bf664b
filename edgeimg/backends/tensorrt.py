"""TensorRT 10+: serialized plans for NVIDIA GPUs and Jetson; tensorrt and pycuda load lazily.

Written against the documented TensorRT 10 Python API. INT8 is explicit quantization: the QDQ
ONNX from `edgeimg.engine.quantize` carries the scales, so no calibrator is involved (the
implicit calibrators are deprecated in 10 and gone in 11).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeimg import hookimpl
from edgeimg.backends.base import Backend, BackendUnavailable, CompileJob, Profiles, Runner
from edgeimg.device import gpu_description

#: BuilderFlag names per precision; QDQ nodes carry INT8 scales, the flag lets TensorRT use them
PRECISION_FLAGS: dict[str, tuple[str, ...]] = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}
WORKSPACE_BYTES = 1 << 30
TIMING_CACHE = "timing.cache"


def builder_flags(precision: str, available: set[str] | None = None) -> tuple[str, ...]:
    """The BuilderFlag names to set; raises when this TensorRT dropped a needed flag (11+)."""
    flags = PRECISION_FLAGS[precision]
    if available is None:
        return flags
    missing = [flag for flag in flags if flag not in available]
    if missing and precision != "int8":
        raise BackendUnavailable(
            f"this TensorRT has no BuilderFlag.{missing[0]}; build {precision} on TensorRT 10"
        )
    return tuple(flag for flag in flags if flag in available)


def _logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> Any:
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network


def _config(trt: Any, builder: Any, precision: str, profiles: Profiles, cache: Path) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in builder_flags(precision, set(trt.BuilderFlag.__members__)):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    timing = config.create_timing_cache(cache.read_bytes() if cache.exists() else b"")
    config.set_timing_cache(timing, False)  # (cache, ignore_mismatch)
    return config


class TensorRTRunner:
    """A deserialized plan with pycuda device buffers and one stream; shapes set per call."""

    def __init__(self, plan: bytes) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        cuda.init()
        self.cuda = cuda
        self.context_cuda = cuda.Device(0).retain_primary_context()
        self.context_cuda.push()
        try:
            self.engine = trt.Runtime(_logger()).deserialize_cuda_engine(plan)
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
        finally:
            self.context_cuda.pop()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers: dict[str, tuple[int, Any]] = {}

    def _buffer(self, name: str, nbytes: int) -> Any:
        size, allocation = self.buffers.get(name, (0, None))
        if size < nbytes:
            allocation = self.cuda.mem_alloc(nbytes)
            self.buffers[name] = (nbytes, allocation)
        return allocation

    def run(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        cuda = self.cuda
        self.context_cuda.push()
        try:
            for name, array in zip(self.inputs, arrays, strict=True):
                host = np.ascontiguousarray(array, dtype=self.dtypes[name])
                self.context.set_input_shape(name, host.shape)
                device = self._buffer(name, host.nbytes)
                cuda.memcpy_htod_async(device, host, self.stream)
                self.context.set_tensor_address(name, int(device))
            results = []
            for name in self.outputs:
                host = cuda.pagelocked_empty(
                    tuple(self.context.get_tensor_shape(name)), self.dtypes[name]
                )
                device = self._buffer(name, max(host.nbytes, 1))
                self.context.set_tensor_address(name, int(device))
                results.append((host, device))
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for host, device in results:
                cuda.memcpy_dtoh_async(host, device, self.stream)
            self.stream.synchronize()
        finally:
            self.context_cuda.pop()
        return tuple(np.array(host) for host, _ in results)


class TensorRTBackend(Backend):
    name = "tensorrt"
    summary = "TensorRT 10+ plan with pycuda buffers; NVIDIA GPU or Jetson"
    distribution = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    priority = 100
    engine_file = "model.plan"
    uses_gpu = True

    def missing(self) -> str | None:
        if self.version() is None:
            return (
                "TensorRT is not installed (pip install 'edgeimg[tensorrt]' on an NVIDIA machine)"
            )
        try:
            importlib.metadata.version("pycuda")
        except importlib.metadata.PackageNotFoundError:
            return "pycuda is not installed (pip install 'edgeimg[tensorrt]')"
        if gpu_description() is None:
            return "no CUDA GPU found"
        return None

    def compile(self, job: CompileJob) -> Path:
        import tensorrt as trt

        logger = _logger()
        builder = trt.Builder(logger)
        network = _parse(trt, builder, logger, job.onnx_path)
        cache = job.out_dir / TIMING_CACHE
        config = _config(trt, builder, job.precision, job.profiles, cache)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError("TensorRT failed to build the engine (see its log above)")
        cache.write_bytes(bytes(config.get_timing_cache().serialize()))
        target = job.out_dir / self.engine_file
        target.write_bytes(bytes(plan))
        return target

    def open(self, engine_path: Path, spec: Any, manifest: dict[str, Any]) -> Runner:
        return TensorRTRunner(engine_path.read_bytes())


@hookimpl
def register_backends(register):
    register(TensorRTBackend())
