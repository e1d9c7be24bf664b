"""`edgeimg plugin new`: write a complete, installable model plugin package for one task.

The package passes its own tests and goes through `pip install -e`, `edgeimg train`,
`build-engine`, `run`, `bench` and `serve` as written; docs/example-plugin is its output for
`edgeimg plugin new hello --task classify`, and a test keeps the two the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from edgeimg.scaffold.tasks import TASKS, Task

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class ScaffoldError(ValueError):
    """The plugin cannot be written (bad name, target not empty); the message says why."""


PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "edgeimg plugin: $summary"
requires-python = ">=3.10"
dependencies = ["edgeimg", "torch", "numpy"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.edgeimg]
$dist = "$package"

[tool.setuptools]
packages = ["$package"]

[tool.setuptools.package-data]
$package = ["weights/*.safetensors", "weights/*.json"]

[tool.ruff]
line-length = 100

[tool.ruff.lint.isort]
known-first-party = ["$package"]
"""

INIT = '''\
"""edgeimg plugin $dist: $summary.

Importing this module is cheap: it only declares the ModelSpec. The network lives in
$package.model, imported when a command builds, trains or runs the model.
"""

from edgeimg import sdk

#: the edgeimg plugin SDK versions this plugin is written for
SDK_REQUIRES = ">=1,<2"


@sdk.hookimpl
def register_models(register):
    register(
        sdk.ModelSpec(
            name="$name",
            version="0.1.0",
            task="$spec_task",
            summary="$summary",
            implementation="$package.model:$cls",
            weights="weights/$name.safetensors",
            input=$input,
            outputs=$outputs,
            metric="$metric",
        )
    )
'''

MODEL = '''\
"""The $name network. sdk.$base provides data, loss, metrics and postprocessing."""

from __future__ import annotations

import torch
from edgeimg import sdk
from torch import nn
$network

class $cls(sdk.$base):
    """Only `build()` is ours; help(sdk.$base) lists what else may be overridden."""

    epochs = 4
    batch_size = 16
    learning_rate = 3e-3
    $sizes

    def build(self) -> nn.Module:
        return Network()
'''

TESTS = '''\
"""$dist's own checks: the spec registers, the network's outputs fit the SDK
contract, and one training step gives a finite loss, metrics and per-item results."""

import numpy as np
import torch
from edgeimg import sdk
from torch.utils.data import DataLoader, Subset

import $package


def spec() -> sdk.ModelSpec:
    specs = []
    $package.register_models(register=specs.append)
    (only,) = specs
    return only


def test_spec_is_valid_and_declares_the_sdk():
    assert spec().task == "$spec_task" and spec().metric == "$metric"
    assert $package.SDK_REQUIRES


def test_network_outputs_match_the_contract():
    implementation = spec().load()(spec())
    network = implementation.build().eval()
    inputs = [torch.from_numpy(a) for a in implementation.example_inputs(3)]
    outputs = network(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert len(outputs) == len(implementation.output_names)
    assert tuple(outputs[0].shape) == $forward_shape


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
    assert "$metric" in implementation.metrics(outputs, truth)
    assert len(implementation.postprocess(tuple(outputs))) == 8
'''

README = """\
# $dist

$summary. An edgeimg model plugin for task `$spec_task` on the SDK base
class `edgeimg.sdk.$base`, written by `edgeimg plugin new $name --task $task`.

```sh
pip install -e .                      # registers the model with edgeimg
pytest tests                          # this plugin's own checks
edgeimg train $name --out $package/weights/$name.safetensors
edgeimg build-engine $name            # export, compile, verify against torch
edgeimg synth study --size 64 --slices 24
edgeimg run $name study --out results
edgeimg bench $name --seconds 2
edgeimg serve --aet EDGE --model $name
```

Weights trained into `$package/weights/` ship with the package. Weights kept elsewhere are
passed with `--weights FILE` to `build-engine`, `bench`, `run` and `serve`.
"""


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name)) + "Model"


def render(name: str, task: str) -> dict[str, str]:
    """The package's files for model NAME and TASK, by relative path."""
    if not NAME.match(name):
        raise ScaffoldError(
            f"plugin name {name!r}: use lower-case letters and digits, words joined by '-'"
        )
    if task not in TASKS:
        raise ScaffoldError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    chosen: Task = TASKS[task]
    package = "edgeimg_" + name.replace("-", "_")
    values = {
        **chosen.__dict__,
        "name": name,
        "task": task,
        "dist": f"edgeimg-{name}",
        "package": package,
        "cls": _camel(name),
        "forward_shape": chosen.forward_shape.replace("batch", "3"),
    }

    def fill(template: str) -> str:
        return Template(template).substitute(values)

    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"{package}/__init__.py": fill(INIT),
        f"{package}/model.py": fill(MODEL),
        f"{package}/weights/.gitkeep": "",
        f"tests/test_{package}.py": fill(TESTS),
    }


def write(name: str, task: str, parent: Path) -> Path:
    """Write the package into parent/edgeimg-NAME (which must not exist or be empty)."""
    files = render(name, task)
    root = Path(parent) / f"edgeimg-{name}"
    if root.exists() and any(root.iterdir()):
        raise ScaffoldError(f"{root} already exists and is not empty")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
