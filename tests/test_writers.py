"""Writers are plugins: the built-in ones and a third party's (installed through an entry point)
run through the same hook in `run` and `serve`, every object they write passes the gate and
dciodvfy, and the same input gives the same bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from dciodvfy import dciodvfy_errors

from edgeimg.cli import cli
from edgeimg.errors import EdgeimgError
from edgeimg.pipeline import Producer, decode_file, scan, write_outputs
from edgeimg.plugins import PluginError, load_registry
from edgeimg.synth.dicom import write_study
from edgeimg.writers import Writer, choose
from tests.conftest import write_distribution
from testsupport.peers import free_port, needs_dcmtk, start_serve, stop

PLUGIN = Path(__file__).parent / "plugins" / "edgeimg_profile_sc.py"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def installed(site_dir):
    """The profile writer installed as pip would leave it: a module and an entry point."""
    write_distribution(
        site_dir, "edgeimg-profile-sc", "profile-sc", "edgeimg_profile_sc", PLUGIN.read_text()
    )
    return site_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_study(root, series=1, slices=6, size=64, seed=3)
    for path in root.rglob("*"):
        if path.is_file() and path.suffix != ".dcm":
            path.unlink()
    return root


def _written(producer: Producer, study: Path, items: list, out: Path) -> list[Path]:
    job = scan([study], producer.spec).jobs[0]
    decoded = [decode_file(path, producer.spec) for path in job.paths]
    made = write_outputs(producer, decoded, items, out)
    return sorted(Path(p) for p in (*made.objects, *made.files))


def _items(spec) -> list[dict]:
    """Six slices' results of the kind `spec`'s task gives, at the model's size."""
    size = spec.input.size
    if spec.task == "segment":
        return [{"mask": np.eye(*size, dtype=np.uint8)}] * 6
    if spec.task == "enhance":
        return [{"image": np.full(size, 0.5, dtype=np.float32)}] * 6
    if spec.task == "detect":
        return [{"boxes": [[4.0, 5.0, 20.0, 30.0]], "scores": [0.8]}] + [
            {"boxes": [], "scores": []}
        ] * 5
    if spec.task == "series-classify":
        return [{"probability": 0.8, "positive": True, "slice_probabilities": [0.5] * 6}]
    return [{"probability": p, "label": p > 0.5} for p in (0.2, 0.7, 0.8, 0.1, 0.9, 0.3)]


#: sha256 of what every built-in writer wrote for `study` and `_items` before the SR write was
#: made cheaper (main at c4ab85f): making it cheaper must not move a byte. The bytes name the
#: versions below (highdicom and edgeimg write theirs into them); after an upgrade, regenerate
#: the digests from a checkout that has not changed what is written.
GOLDEN_VERSIONS = {"pydicom": "3.0.2", "highdicom": "0.28.2", "edgeimg": "0.1.0"}
GOLDEN_DIGESTS = {
    "cnn": {
        "2.25.125722523890057432745423349850643901954.dcm": (
            "49055b271e824e72a06b766c08454da8d018ce468717ddcd48c8d469e64fd429"
        ),
        "2.25.141759412504040216624044142551001437845.cnn.json": (
            "c6bf9c85ff23c752344fc99ad8c71c9aa5afc0e4e707e2136099ac272422454e"
        ),
    },
    "unet": {
        "2.25.189523783390379362998713660350263245801.dcm": (
            "0ce31c85fe0f0b9d65709ea7d4d26dd50766dcf97414ae280d579fd6323b3d33"
        ),
        "2.25.141759412504040216624044142551001437845.unet.json": (
            "0578dc2332c18776a41f04a88d94879ed6eea5ad9222599a41dad63973c93607"
        ),
    },
    "gan": {
        "2.25.161811402973230174230081365031410025871.dcm": (
            "6def70771acddd20e035c75cf2090dfa569b6f9524d818335b9462d9adf98d4e"
        ),
        "2.25.17588020791221946173040936239494596309.dcm": (
            "092653e0ea18add8168ba946d2968703c936526fe57436bcd4ae11099933145a"
        ),
        "2.25.214508946771619853426048205478244037967.dcm": (
            "72d9064a869e93ea45d980e321280c05e368f4f68b3051eaef4a01fedb41d1c8"
        ),
        "2.25.242699909567965750215055670285458231455.dcm": (
            "0ee6ee1cf3024e797d7dd2f29a911b13093af4b7e3195dd4aadfebc31f9c517f"
        ),
        "2.25.290543961406826974032534141833845337636.dcm": (
            "8e9ca4fb01791aecc9f997a38ba35620f2999294f90e4c00a51b8eaa63821685"
        ),
        "2.25.54940306706973219863544917703033675140.dcm": (
            "16690c07ffddf3a7d9bc9d2d07d2e380a1a32ba9748e76ee663a7bbecbcdc5f4"
        ),
        "2.25.141759412504040216624044142551001437845.gan.json": (
            "ee9c3cb3f0987e230668fbade1e4989a94bee5ed08ebddf3f4a6942a7e2957b6"
        ),
    },
    "detector": {
        "2.25.45122236511237911831468849434992168826.dcm": (
            "fada6c750d40644574198c272b3a3886bb47bcd6c69b648eed5cefc047dcb6e3"
        ),
        "2.25.141759412504040216624044142551001437845.detector.json": (
            "8172b9a44b204543774b26ab086ab86201d2b385fd03086d7e84bf893f840427"
        ),
    },
    "lstm": {
        "2.25.288427773071240464824527628896506111904.dcm": (
            "6b83accca8e0097f58792bdf455bd1b6af6b893758993c1f50e31b316caddc31"
        ),
        "2.25.141759412504040216624044142551001437845.lstm.json": (
            "3b1551aa6f986b9bfb64857c7192435104406b4b48b34613c79b3f712d1d0af4"
        ),
    },
}


@pytest.mark.parametrize("model", ["cnn", "unet", "gan", "detector", "lstm"])
def test_every_built_in_writer_gives_the_same_bytes_twice(model, study, tmp_path):
    registry = load_registry()
    spec = registry.model(model)
    producer = Producer(spec, "0123456789abcdef", choose(spec, registry))
    first = _written(producer, study, _items(spec), tmp_path / "first")
    second = _written(producer, study, _items(spec), tmp_path / "second")
    assert [p.name for p in first] == [p.name for p in second] and len(first) >= 2
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes(), one.name
        if one.suffix == ".dcm":
            assert dciodvfy_errors(one) == []


@pytest.mark.parametrize("model", sorted(GOLDEN_DIGESTS))
def test_every_built_in_writer_writes_the_bytes_it_wrote_before(model, study, tmp_path):
    installed = {name: version(name) for name in GOLDEN_VERSIONS}
    if installed != GOLDEN_VERSIONS:
        pytest.skip(f"digests are of {GOLDEN_VERSIONS}, installed {installed}")
    registry = load_registry()
    spec = registry.model(model)
    producer = Producer(spec, "0123456789abcdef", choose(spec, registry))
    written = _written(producer, study, _items(spec), tmp_path)
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in written}
    assert digests == GOLDEN_DIGESTS[model]


def test_a_model_asking_for_a_writer_that_does_not_take_its_results_is_refused():
    registry = load_registry()
    spec = registry.model("unet")
    with pytest.raises(PluginError, match="accepts slice-finding"):
        choose(dataclasses.replace(spec, outputs=("sr",)), registry)
    with pytest.raises(EdgeimgError, match="unknown writer 'pdf'; available: derived, json"):
        choose(dataclasses.replace(spec, outputs=("pdf",)), registry)
    assert [w.kind for w in choose(dataclasses.replace(spec, outputs=()), registry)] == [
        "seg",
        "json",
    ]


def test_a_writer_declares_what_it_produces():
    with pytest.raises(ValueError, match="produces must be one of"):
        Writer("x", "x", "m:f", produces="pdf")


def test_the_installed_writer_is_listed_with_what_it_accepts(installed):
    writer = load_registry().writer("profile-sc")
    assert writer.accepts == ("slice-finding",) and writer.produces == "dicom"
    assert load_registry().plugins["profile-sc"].hooks == ["register_models", "register_writers"]


def _check(objects: list[Path]) -> None:
    """The plugin's object is there, a valid Secondary Capture; every object passes dciodvfy."""
    classes = [str(pydicom.dcmread(path).SOPClassUID) for path in objects]
    assert SECONDARY_CAPTURE in classes
    for path in objects:
        assert dciodvfy_errors(path) == []


def test_the_installed_writer_runs_in_run_and_writes_the_same_bytes_twice(
    installed, study, engines, tmp_path
):
    outputs = []
    for out in (tmp_path / "first", tmp_path / "second"):
        args = ["run", "cnn-profile", str(study), "--out", str(out)]
        args += ["--engines-dir", str(engines), "--json"]
        done = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert done.exit_code == 0, done.output
        lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        outputs.append(sorted({p for line in lines for p in line["outputs"]}))
        assert {Path(p).parent.name for line in lines for p in line["written_files"]} == {"json"}
    _check([Path(p) for p in outputs[0]])
    names = [[Path(p).name for p in paths] for paths in outputs]
    assert names[0] == names[1] and len(names[0]) == 2  # the SR and the profile
    for one, other in zip(*outputs, strict=True):
        assert Path(one).read_bytes() == Path(other).read_bytes()


@needs_dcmtk
def test_the_installed_writer_runs_in_serve(installed, study, engines, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    port = free_port()
    spool = tmp_path / "spool"
    args = ["--aet", "EDGEIMG", "--host", "127.0.0.1", "--spool", str(spool)]
    args += ["--model", "cnn-profile", "--complete-on-release", "--allow", "SCANNER@127.0.0.1"]
    server = start_serve(*args, port=port, cwd=tmp_path)
    results = spool / "results" / "results.jsonl"
    try:
        files = sorted(str(p) for p in study.rglob("*.dcm"))
        scanner = ["storescu", "-aet", "SCANNER", "-aec", "EDGEIMG", "127.0.0.1", str(port)]
        subprocess.run([*scanner, *files], check=True, capture_output=True, timeout=120)
        deadline = time.monotonic() + 180
        while not (results.exists() and results.read_text().strip()):
            assert time.monotonic() < deadline and server.poll() is None, "no result from serve"
            time.sleep(0.2)
    finally:
        assert stop(server, signal.SIGTERM) == 0
    (line,) = [json.loads(text) for text in results.read_text().splitlines()]
    assert line["model"] == "cnn-profile" and len(line["outputs"]) == 2
    _check([Path(p) for p in line["outputs"]])
    assert [Path(p).parent.name for p in line["written_files"]] == ["json"]
