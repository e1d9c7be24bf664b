"""edgeimg plugin: Series classifiers: RNN, LSTM, GRU over slices.

Importing this module is cheap: it only declares ModelSpecs.
The network lives in edgeimg_sequence.model, imported on demand.
"""

from edgeimg.sdk import InputSpec, ModelSpec, hookimpl

SDK_REQUIRES = ">=1,<2"

SEQUENCE_INPUT = InputSpec(size=(32, 32), sequence=True, min_length=8, max_length=64)


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="rnn",
            version="0.1.0",
            task="series-classify",
            summary="Per-slice CNN encoder, then an Elman RNN over the slice axis",
            implementation="edgeimg_sequence.model:RNNModel",
            weights="weights/rnn.safetensors",
            input=SEQUENCE_INPUT,
            outputs=("sr", "json"),
            metric="accuracy",
            tolerance=0.005,
        )
    )
    register(
        ModelSpec(
            name="lstm",
            version="0.1.0",
            task="series-classify",
            summary="Per-slice CNN encoder, then a bidirectional LSTM over the slice axis",
            implementation="edgeimg_sequence.model:LSTMModel",
            weights="weights/lstm.safetensors",
            input=SEQUENCE_INPUT,
            outputs=("sr", "json"),
            metric="accuracy",
            tolerance=0.005,
        )
    )
    register(
        ModelSpec(
            name="gru",
            version="0.1.0",
            task="series-classify",
            summary="Per-slice CNN encoder, then a bidirectional GRU over the slice axis",
            implementation="edgeimg_sequence.model:GRUModel",
            weights="weights/gru.safetensors",
            input=SEQUENCE_INPUT,
            outputs=("sr", "json"),
            metric="accuracy",
            tolerance=0.005,
        )
    )
