"""The fence around PyTriton's internals: `edgeimg host` publishes each engine's identity as
model config parameters through the one function that reaches into PyTriton."""

from __future__ import annotations

import numpy as np
import pytest

pytriton = pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed")

from edgeimg.triton.host import publish_parameters  # noqa: E402


def _bound(name: str):
    from pytriton.model_config import ModelConfig, Tensor

    triton = pytriton.Triton(config=pytriton.TritonConfig(http_port=0, grpc_port=0))
    triton.bind(
        model_name=name,
        infer_func=lambda requests: [],
        inputs=[Tensor(name="x", dtype=np.float32, shape=(3,))],
        outputs=[Tensor(name="y", dtype=np.float32, shape=(3,))],
        config=ModelConfig(max_batch_size=4),
    )
    return triton


def test_parameters_reach_the_config_pytriton_writes():
    triton = _bound("cnn")
    publish_parameters(triton, "cnn", {"edgeimg_key": "abc123"})
    (model,) = triton._model_manager.models
    parameters = model._get_triton_model_config().backend_parameters
    assert parameters["edgeimg_key"] == "abc123"
    assert "workspace-path" in parameters, "PyTriton's own parameters are kept"


def test_a_model_that_was_not_bound_is_an_error():
    triton = _bound("cnn")
    with pytest.raises(RuntimeError, match="did not bind model 'unet'"):
        publish_parameters(triton, "unet", {"edgeimg_key": "abc123"})


def test_changed_internals_say_which_version_edgeimg_expects():
    with pytest.raises(RuntimeError, match="0.7.x"):
        publish_parameters(object(), "cnn", {"edgeimg_key": "abc123"})
