"""edgeimg plugin: CNN slice classifier: lesion present.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_cnn.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="cnn",
            version="0.1.0",
            task="classify",
            summary="Slice classifier: lesion present, with probability",
            implementation="edgeimg_cnn.model:CNNModel",
            weights="weights/cnn.safetensors",
            input=InputSpec(size=(96, 96)),
            outputs=("sr", "json"),
            metric="auc",
            tolerance=0.005,
        )
    )
