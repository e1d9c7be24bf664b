"""edgeimg plugin edgeimg-hello: Slice classifier: lesion present, with probability.

Importing this module is cheap: it only declares the ModelSpec. The network lives in
edgeimg_hello.model, imported when a command builds, trains or runs the model.
"""

from edgeimg import sdk

#: the edgeimg plugin SDK versions this plugin is written for
SDK_REQUIRES = ">=1,<2"


@sdk.hookimpl
def register_models(register):
    register(
        sdk.ModelSpec(
            name="hello",
            version="0.1.0",
            task="classify",
            summary="Slice classifier: lesion present, with probability",
            implementation="edgeimg_hello.model:HelloModel",
            weights="weights/hello.safetensors",
            input=sdk.InputSpec(size=(64, 64)),
            outputs=("sr", "json"),
            metric="auc",
        )
    )
