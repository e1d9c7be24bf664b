"""edgeimg-hello's own checks: the spec registers, the network's outputs fit the SDK
contract, and one training step gives a finite loss, metrics and per-item results."""

import numpy as np
import torch
from edgeimg import sdk
from torch.utils.data import DataLoader, Subset

import edgeimg_hello


def spec() -> sdk.ModelSpec:
    specs = []
    edgeimg_hello.register_models(register=specs.append)
    (only,) = specs
    return only


def test_spec_is_valid_and_declares_the_sdk():
    assert spec().task == "classify" and spec().metric == "auc"
    assert edgeimg_hello.SDK_REQUIRES


def test_network_outputs_match_the_contract():
    implementation = spec().load()(spec())
    network = implementation.build().eval()
    inputs = [torch.from_numpy(a) for a in implementation.example_inputs(3)]
    outputs = network(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(implementation.output_names)
    assert tuple(outputs[0].shape) == (3, 1)


def test_one_training_step_metrics_and_postprocess():
    torch.manual_seed(0)
    implementation = spec().load()(spec())
    network = implementation.build()
    train, validation = implementation.datasets(seed=0)
    optimizer = torch.optim.AdamW(network.parameters(), lr=implementation.learning_rate)
    inputs, *targets = next(iter(DataLoader(Subset(train, range(8)), batch_size=8)))
    logs = implementation.train_step(
        network, inputs, targets[0] if len(targets) == 1 else tuple(targets), optimizer
    )
    assert np.isfinite(logs["loss"])
    outputs, truth = sdk.predict(network, Subset(validation, range(8)))
    assert "auc" in implementation.metrics(outputs, truth)
    assert len(implementation.postprocess(tuple(outputs))) == 8
