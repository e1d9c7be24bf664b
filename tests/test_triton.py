"""Triton: the exported repository against Triton's own schema, and a real tritonserver started
once for the module by `edgeimg host` (PyTriton) on free loopback ports: `run` through it, two
clients batched together, and a `serve` job that waits out the server's death.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.synth.dicom import write_study
from tests.conftest import ROOT
from tests.test_engine_fakes import build
from testsupport.peers import free_port, poll

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed")
MODELS = ("cnn", "unet", "gru")  # a classifier, the U-Net, a sequence model


@pytest.fixture(autouse=True)
def no_target(monkeypatch):
    """--triton sets $EDGEIMG_TRITON for the process: set it here so that it is undone after."""
    monkeypatch.setenv("EDGEIMG_TRITON", "")


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_export_triton_repository_parses_with_tritons_schema_and_versions(engines, tmp_path):
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    build("cnn", "onnxruntime", engines_dir=engines)
    repo = tmp_path / "repo"
    args = ("export-triton", "cnn", "--repo", str(repo), "--engines-dir", str(engines), "--json")
    first = json.loads(cli_run(*args).stdout)["models"][0]
    assert first["changed"] and first["version"] == 1 and first["platform"] == "onnxruntime_onnx"
    config = text_format.Parse((repo / "cnn" / "config.pbtxt").read_text(), pb.ModelConfig())
    graph = onnx.load(str(repo / "cnn" / "1" / "model.onnx")).graph
    manifest = json.loads((repo / "cnn" / "1" / "manifest.json").read_text())
    assert config.name == "cnn" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    for declared, tensors in ((config.input, graph.input), (config.output, graph.output)):
        assert [t.name for t in declared] == [t.name for t in tensors]
        for mine, theirs in zip(declared, tensors, strict=True):
            assert mine.data_type == pb.TYPE_FP32
            shape = [d.dim_value or -1 for d in theirs.type.tensor_type.shape.dim]
            assert list(mine.dims) == shape[1:]  # the batch axis is Triton's own
    assert config.parameters["edgeimg_key"].string_value == manifest["key"]

    again = json.loads(cli_run(*args).stdout)["models"][0]
    assert not again["changed"] and again["version"] == 1
    changed = build("cnn", "onnxruntime", max_batch=4, engines_dir=engines)
    third = json.loads(cli_run(*args, "--max-batch", "4").stdout)["models"][0]
    assert third["changed"] and third["version"] == 2 and third["key"] == changed.key
    config = text_format.Parse((repo / "cnn" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert (
        config.max_batch_size == 4 and config.parameters["edgeimg_key"].string_value == changed.key
    )
    assert sorted(p.name for p in (repo / "cnn").iterdir()) == ["1", "2", "config.pbtxt"]


class Host:
    """`edgeimg host` in its own process group (tritonserver is its child: both die together)."""

    def __init__(self, engines: Path, log: Path) -> None:
        self.engines, self.log = engines, log
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def start(self, timeout: float = 180) -> None:
        command = [
            sys.executable,
            "-m",
            "edgeimg",
            "host",
            *MODELS,
            "--engines-dir",
            str(self.engines),
            "--address",
            "127.0.0.1",
            *[f"--{kind}-port={port}" for kind, port in self.ports.items()],
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        import tritonclient.grpc as grpc

        client = grpc.InferenceServerClient(self.target)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if all(client.is_model_ready(model) for model in MODELS):
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.5)
        self.kill()
        pytest.fail(f"edgeimg host did not come up: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole group: the server dies as a crashed machine's would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@pytest.fixture(scope="module")
def host(engines, tmp_path_factory):
    pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (edgeimg host)")
    for model in MODELS:
        build(model, "onnxruntime", engines_dir=engines)
    server = Host(engines, tmp_path_factory.mktemp("host") / "host.log")
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_study(out, series=1, slices=8, size=64, seed=4)
    return out


def _findings(out: Path) -> dict[str, list]:
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        line["sop_instance_uid"]: line.get("results") or line["series_results"]
        for line in lines
        if line["status"] == "ok"
    }


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, float):
        return abs(got - want) <= 1e-3  # what the results print is rounded to 1e-4
    return got == want


@pytest.mark.integration
@pytest.mark.parametrize("model", MODELS)
def test_run_through_triton_matches_the_local_engine(host, study, engines, tmp_path, model):
    runs = {}
    for backend in ("onnxruntime", "triton"):
        out = tmp_path / backend
        done = cli_run(
            "run",
            model,
            str(study),
            "--backend",
            backend,
            "--triton",
            host.target,
            "--engines-dir",
            str(engines),
            "--out",
            str(out),
            "--workers",
            "0",
            "--json",
        )
        assert done.exit_code == 0, done.output
        runs[backend] = (json.loads(done.stdout), _findings(out))
    local, remote = runs["onnxruntime"], runs["triton"]
    assert remote[0]["counts"] == local[0]["counts"] and remote[1]
    assert _close(remote[1], local[1])
    built = json.loads((engines / model / remote[0]["engine"] / "manifest.json").read_text())
    assert built["backend"] == "triton" and built["verification"]["passed"]
    assert built["device"]["remote_key"] == local[0]["engine"]


@pytest.mark.integration
def test_an_unreachable_server_is_one_line_naming_it(study, engines, tmp_path):
    target = f"127.0.0.1:{free_port()}"
    done = CliRunner().invoke(
        cli,
        [
            "run",
            "cnn",
            str(study),
            "--backend",
            "triton",
            "--triton",
            target,
            "--engines-dir",
            str(engines),
            "--out",
            str(tmp_path),
        ],
    )
    assert done.exit_code == 1
    assert f"triton at grpc://{target}" in done.output and "Traceback" not in done.output


@pytest.mark.integration
def test_two_clients_at_once_are_batched_by_the_server(host):
    from edgeimg.backends.triton import RemoteModel, TritonClient, TritonRunner, parse_target

    target = parse_target(host.target)
    ((_, dims),) = RemoteModel.read(TritonClient(target), "cnn").signature["inputs"]
    image = np.random.default_rng(0).random((1, *dims), dtype=np.float32)
    before = _statistics(TritonClient(target))

    def client() -> None:
        connection = TritonClient(target)
        runner = TritonRunner(connection, RemoteModel.read(connection, "cnn"))
        for _ in range(40):
            runner.run(image)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # the counters can lag the responses: a clean-clone CI read 78 of 80 right after both
    # clients had their answers
    connection = TritonClient(target)
    settled = before["inference_count"] + 80
    after = poll(
        lambda: _statistics(connection), lambda stats: stats["inference_count"] >= settled, 10
    )
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 80 and executions < inferences  # some engine calls served both


def _statistics(client) -> dict[str, int]:
    (stats,) = client.statistics("cnn")["model_stats"]
    return {key: int(stats.get(key, 0)) for key in ("inference_count", "execution_count")}


@pytest.mark.integration
def test_build_over_http_verifies_and_other_weights_are_refused(host, engines):
    import dataclasses

    from edgeimg.plugins import get_registry

    args = [
        "build-engine",
        "cnn",
        "--backend",
        "triton",
        "--engines-dir",
        str(engines),
        "--triton",
        f"http://127.0.0.1:{host.ports['http']}",
    ]
    built = json.loads(cli_run(*args, "--json").stdout)
    assert built["backend"] == "triton" and built["verification"]["passed"]
    registry = get_registry()
    registry.models["cnn"] = dataclasses.replace(registry.model("cnn"), version="9.9.9")
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert "runs model_version '0.1.0', this box has '9.9.9'; refused" in refused.output


@pytest.mark.integration
def test_a_serve_job_waits_for_a_killed_server_and_delivers_once(
    host, engines, tmp_path, monkeypatch
):
    from edgeimg.commands.serve import tomllib
    from edgeimg.net import parse_peer, send
    from edgeimg.serve.pipeline import Worker
    from edgeimg.serve.routing import parse_routing
    from tests.test_pipeline_routing import listener

    monkeypatch.setenv("EDGEIMG_TRITON", host.target)
    study = write_study(tmp_path / "study", series=1, slices=6, size=64, seed=6)
    config = '[[destination]]\nname = "pacs"\npeer = "PACS@127.0.0.1:{port}"\n'
    config += '[[route]]\nmodel = "cnn"\nmodality = "CT"\n'
    with (
        listener(tmp_path / "pacs", "PACS") as pacs,
        listener(tmp_path / "spool", "EDGE", complete_on_release=True) as edge,
    ):
        routing = parse_routing(tomllib.loads(config.format(port=pacs.config.port)), "t.toml")
        worker = Worker(
            edge.queue,
            tmp_path / "spool" / "results",
            routing,
            backend="triton",
            engines_dir=engines,
            backoff=0.2,
        )
        worker.warm()  # the engine is open on the live server, then the server dies
        host.kill()
        peer = parse_peer(f"EDGE@127.0.0.1:{edge.config.port}")
        assert all(r.ok for r in send(peer, [study.out_dir / "series-001"], calling="CT"))
        assert poll(lambda: edge.queue.totals()["series"] == {"complete": 1})
        for _ in range(3):
            worker.step()
            time.sleep(0.3)
        (waiting,) = edge.queue.waiting()
        assert f"triton at grpc://{host.target}" in waiting["reason"]
        assert edge.queue.totals()["jobs"] == {"pending": 1}
        assert edge.queue.totals()["series"] == {"pending": 1}  # not failed
        shown = cli_run("queue", "--spool", str(tmp_path / "spool"))
        assert "waiting" in shown.output and host.target in shown.output

        host.start()
        deadline = time.monotonic() + 120
        while edge.queue.totals()["jobs"] != {"done": 1} and time.monotonic() < deadline:
            worker.step()
            time.sleep(0.1)
        assert edge.queue.totals()["jobs"] == {"done": 1}
        while worker.step():
            pass
        assert edge.queue.totals()["forwards"] == {"done": 1}
        assert pacs.queue.totals()["instances"] == 1  # the SR arrived once
    lines = (tmp_path / "spool" / "results" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1


@pytest.mark.parametrize(
    ("text", "protocol", "tls"),
    [
        ("h:8001", "grpc", False),
        ("grpcs://h:8001", "grpc", True),
        ("http://h:8000", "http", False),
        ("https://10.0.0.1:443", "http", True),
    ],
)
def test_target_forms(text, protocol, tls):
    from edgeimg.backends.triton import parse_target

    target = parse_target(text)
    assert (target.protocol, target.tls) == (protocol, tls) and parse_target(str(target)) == target


@pytest.mark.parametrize("text", ["h", "h:port", "ftp://h:1", ":8001"])
def test_bad_targets_are_refused(text):
    from edgeimg.backends.triton import parse_target
    from edgeimg.engine.errors import EngineError

    with pytest.raises(EngineError, match="HOST:PORT"):
        parse_target(text)


def test_auto_never_picks_the_remote_engine(monkeypatch):
    from edgeimg.engine.build import resolve_backend
    from edgeimg.engine.race import candidates
    from edgeimg.plugins import get_registry

    monkeypatch.setenv("EDGEIMG_TRITON", "127.0.0.1:1")
    backends = get_registry().backends
    wanted, unavailable = candidates(backends, "auto")
    assert "triton" not in {backend.name for backend, _ in wanted}
    assert "triton" not in {row["backend"] for row in unavailable}
    assert resolve_backend(backends, "auto", "fp32").name != "triton"
    assert {backend.name for backend, _ in candidates(backends, "triton")[0]} == {"triton"}
