"""The plugin manager: defaults, fakes through the real manager, entry points, isolation."""

from __future__ import annotations

import pytest

from edgeimg import hookimpl
from edgeimg.plugins import DEFAULT_PLUGINS, PluginError, UnknownName, load_registry
from edgeimg.sdk.model import ModelSpec
from tests.conftest import write_distribution

BUILT_IN_MODELS = {"cnn", "unet", "detector", "rnn", "lstm", "gru", "autoencoder", "gan"}
MODEL_PLUGINS = {
    "edgeimg-cnn",
    "edgeimg-unet",
    "edgeimg-detect",
    "edgeimg-sequence",
    "edgeimg-autoencoder",
    "edgeimg-gan",
}


def spec(name: str, task: str = "classify") -> ModelSpec:
    return ModelSpec(
        name=name, version="1.0", task=task, summary="fake", implementation="fake.module:Fake"
    )


class FakeModels:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def register_models(self, register):
        for name in self.names:
            register(spec(name))


def test_built_in_plugins_and_models_are_found():
    registry = load_registry()
    assert MODEL_PLUGINS <= set(registry.plugins)
    assert set(DEFAULT_PLUGINS) <= set(registry.plugins)
    assert BUILT_IN_MODELS <= set(registry.models)
    assert {"onnxruntime", "torch", "tensorrt"} <= set(registry.backends)
    assert "json" in registry.writers
    assert registry.model("gru").plugin == "edgeimg-sequence"
    assert not registry.failures


@pytest.mark.parametrize("name", sorted(BUILT_IN_MODELS))
def test_every_built_in_spec_is_complete(name):
    model = load_registry().model(name)
    assert model.version and model.summary and model.labels
    assert model.implementation.split(".")[0].startswith("edgeimg_")
    assert model.as_dict()["plugin"] == model.plugin


def test_fake_registered_through_the_real_manager():
    registry = load_registry(extra=[("fake", FakeModels("fake-one", "fake-two"))])
    assert registry.model("fake-one").plugin == "fake"
    assert registry.plugins["fake"].hooks == ["register_models"]


def test_duplicate_model_names_name_both_plugins():
    with pytest.raises(PluginError, match="'first'.*'second'"):
        load_registry(extra=[("first", FakeModels("twin")), ("second", FakeModels("twin"))])


def test_unknown_model_lists_the_names():
    with pytest.raises(UnknownName, match="available: .*cnn.*gru"):
        load_registry().model("resnet")


def test_plugin_raising_in_register_is_isolated():
    class Raises:
        @hookimpl
        def register_models(self, register):
            raise RuntimeError("weights folder missing")

    registry = load_registry(extra=[("raises", Raises())])
    assert "weights folder missing" in registry.plugins["raises"].error
    assert BUILT_IN_MODELS <= set(registry.models)


def test_plugin_failing_to_import_is_isolated(site_dir):
    write_distribution(site_dir, "edgeimg-broken", "broken", "broken_plugin", "import nosuchlib\n")
    registry = load_registry()
    assert "nosuchlib" in registry.plugins["broken"].error
    assert BUILT_IN_MODELS <= set(registry.models)


def test_entry_point_plugin_is_loaded(site_dir):
    write_distribution(
        site_dir,
        "edgeimg-extra",
        "extra",
        "extra_plugin",
        """
        from edgeimg import hookimpl
        from edgeimg.sdk.model import ModelSpec

        @hookimpl
        def register_models(register):
            register(ModelSpec(name="extra", version="2.0", task="segment",
                               summary="from an entry point", implementation="extra_plugin:X"))
        """,
    )
    registry = load_registry()
    assert registry.model("extra").plugin == "extra"
    assert registry.plugins["extra"].distribution == "edgeimg-extra"
    assert registry.plugins["extra"].version == "0.1.0"


def test_allow_list_pins_what_loads(monkeypatch):
    monkeypatch.setenv("EDGEIMG_LOAD_PLUGINS", "edgeimg-cnn, edgeimg-gan")
    registry = load_registry()
    assert set(registry.models) == {"cnn", "gan"}
    assert {"onnxruntime", "torch"} <= set(registry.backends)


def test_deny_list_removes_plugins(monkeypatch):
    monkeypatch.setenv("EDGEIMG_DISABLE_PLUGINS", "edgeimg-sequence,edgeimg.backends.tensorrt")
    registry = load_registry()
    assert not {"rnn", "lstm", "gru"} & set(registry.models)
    assert "tensorrt" not in registry.backends
    assert "cnn" in registry.models


def test_empty_allow_list_loads_only_defaults(monkeypatch):
    monkeypatch.setenv("EDGEIMG_LOAD_PLUGINS", "")
    registry = load_registry()
    assert registry.models == {}
    assert "onnxruntime" in registry.backends
