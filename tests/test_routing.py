"""Routing rules of `edgeimg serve --config`: matching, destinations, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.commands.serve import tomllib
from edgeimg.serve.routing import (
    DeidSettings,
    Destination,
    Route,
    Routing,
    RoutingError,
    SeriesFacts,
    parse_routing,
)

ROOT = Path(__file__).resolve().parent.parent
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
CHEST_CT = SeriesFacts(modality="CT", sop_class=CT, body_part="Chest", slices=40)


@pytest.mark.parametrize(
    ("route", "matches"),
    [
        (Route("m"), True),
        (Route("m", modality=frozenset({"CT"})), True),
        (Route("m", modality=frozenset({"MR", "PT"})), False),
        (Route("m", sop_class=frozenset({CT})), True),
        (Route("m", sop_class=frozenset({MR})), False),
        (Route("m", body_part=frozenset({"CHEST"})), True),  # BodyPartExamined "Chest"
        (Route("m", body_part=frozenset({"HEAD"})), False),
        (Route("m", min_slices=40), True),
        (Route("m", min_slices=41), False),
        (Route("m", max_slices=40), True),
        (Route("m", max_slices=39), False),
        (Route("m", frozenset({"CT"}), frozenset({CT}), frozenset({"CHEST"}), 20, 100), True),
        (Route("m", modality=frozenset({"CT"}), body_part=frozenset({"HEAD"})), False),
        (Route("m", modality=frozenset({"MR"}), body_part=frozenset({"CHEST"})), False),
    ],
)
def test_each_filter_and_combinations(route: Route, matches: bool) -> None:
    assert route.matches(CHEST_CT) is matches


def test_a_body_part_filter_needs_a_body_part() -> None:
    route = Route("m", body_part=frozenset({"CHEST"}))
    assert not route.matches(SeriesFacts(modality="CT", sop_class=CT, slices=40))


def _routing(text: str, source: str = "serve.toml") -> Routing:
    return parse_routing(tomllib.loads(text), source)


TABLES = """
[[destination]]
name = "pacs"
peer = "PACS@10.0.0.9:104"
[[destination]]
name = "research"
peer = "RES@10.0.0.10:104"
deid = {retain_uids = true}
[[route]]
model = "cnn"
modality = "ct"
[[route]]
model = "unet"
modality = ["CT"]
destinations = ["research"]
[[route]]
model = "unet"
body_part = ["chest"]
destinations = ["pacs"]
[[route]]
model = "rnn"
modality = "MR"
"""


def test_models_and_destinations_for_a_series() -> None:
    routing = _routing(TABLES)
    pacs, research = routing.destinations["pacs"], routing.destinations["research"]
    assert research.deid == DeidSettings(retain_uids=True) and pacs.deid is None
    assert routing.models == ["cnn", "unet", "rnn"]
    # cnn has no destinations: every one; unet matched twice: the union of both routes.
    assert routing.models_for(CHEST_CT) == [("cnn", [pacs, research]), ("unet", [research, pacs])]
    head = SeriesFacts(modality="CT", sop_class=CT, body_part="HEAD", slices=10)
    assert routing.models_for(head) == [("cnn", [pacs, research]), ("unet", [research])]
    assert routing.models_for(SeriesFacts(modality="MR")) == [("rnn", [pacs, research])]
    assert routing.models_for(SeriesFacts(modality="US")) == []
    assert routing.destinations_for("rnn", CHEST_CT) == []


def test_flags_route_everything_to_every_destination() -> None:
    routing = _routing(TABLES).with_flags(["gru"], ["PACS2@127.0.0.1:4242"])
    flagged = routing.destinations["PACS2@127.0.0.1:4242"]
    assert flagged == Destination("PACS2@127.0.0.1:4242", "PACS2@127.0.0.1:4242")
    assert routing.destinations_for("gru", SeriesFacts(modality="US")) == list(
        routing.destinations.values()
    )
    # A route without destinations now includes the flagged one too.
    assert flagged in routing.destinations_for("cnn", CHEST_CT)
    assert Routing().with_flags(["cnn", "cnn"], []).models == ["cnn"]


def test_example_config_in_the_docs_parses() -> None:
    path = ROOT / "docs" / "serve-example.toml"
    data = tomllib.loads(path.read_text())
    routing = parse_routing(data, str(path))
    assert set(routing.destinations) == {"pacs", "research"}
    assert routing.destinations["research"].deid == DeidSettings(clean_descriptors=True)
    assert routing.models == ["cnn", "unet", "rnn"]
    assert [m for m, _ in routing.models_for(CHEST_CT)] == ["cnn", "unet"]
    # docs/serve.md shows the same file (less its two comment lines at the top).
    assert path.read_text().split("\n", 3)[3] in (ROOT / "docs" / "serve.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[route]]\nmodel = "cnn"\nmodalty = "CT"', r"\[\[route\]\] #1: unknown key 'modalty'"),
        ("[[route]]\nmodality = 'CT'", r"\[\[route\]\] #1: model is required"),
        ('[[route]]\nmodel = "cnn"\nmin_slices = -1', r"min_slices must be a whole number"),
        ('[[route]]\nmodel = "cnn"\nmin_slices = "5"', r"min_slices must be a whole number"),
        ('[[route]]\nmodel = "c"\nmin_slices = 9\nmax_slices = 2', r"min_slices 9 is above"),
        ('[[route]]\nmodel = "cnn"\nsop_class = "CT Image"', r"sop_class 'CT Image' is not a UID"),
        ('[[route]]\nmodel = "cnn"\nmodality = [1]', r"modality must be a string or a list"),
        ('[[route]]\nmodel = "cnn"\ndestinations = ["nowhere"]', r"no destination 'nowhere'"),
        ('[[route]]\nmodel = "cnn"\ndestinations = []', r"destinations is empty"),
        ("[[destination]]\nname = 'p'\npeer = 'nope'", r"\[\[destination\]\] #1: peer: 'nope'"),
        ("[[destination]]\npeer = 'P@h:104'", r"name is required"),
        ("[[destination]]\nname = '../x'\npeer = 'P@h:104'", r"name '../x' must be letters"),
        ("[[destination]]\nname='p'\npeer='P@h:1'\n" * 2, r"#2: name 'p' is used twice"),
        ("[[destination]]\nname='p'\npeer='P@h:1'\ndeid = 'yes'", r"deid: must be true, false"),
        ("[[destination]]\nname='p'\npeer='P@h:1'\ndeid = {x = true}", r"unknown key 'x'"),
        ("[[destination]]\nname='p'\npeer='P@h:1'\ndeid = {retain_uids = 1}", r"retain_uids must"),
        ("route = 'cnn'", r"'route' must be an array of tables"),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(RoutingError, match=message) as raised:
        _routing(text, "/etc/edgeimg.toml")
    assert str(raised.value).startswith("/etc/edgeimg.toml: ")


def _serve(tmp_path: Path, config: str, *args: str):
    path = tmp_path / "edge.toml"
    path.write_text(config)
    spool = tmp_path / "spool"
    result = CliRunner().invoke(cli, ["serve", "--config", str(path), "--spool", str(spool), *args])
    return result, path, spool


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ('[serve]\naet = "E"\n[[route]]\nmodel = "cnn"\nbodypart = "CHEST"', "'bodypart'"),
        ('[serve]\naet = "E"\nseries_timeout = 5\nmodels = ["cnn"]', "models"),
        ('[serve]\naet = "E"\n[routes]\nmodel = "cnn"', "'routes'"),
        ('[serve]\naet = "E"\n[[destination]]\nname = "p"\npeer = "P@h"', "peer: 'P@h'"),
        ('[serve\naet = "E"', "cannot read"),
    ],
)
def test_config_errors_are_usage_errors(tmp_path, config: str, named: str) -> None:
    result, path, spool = _serve(tmp_path, config)
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and named in result.output
    assert "Traceback" not in result.output and not spool.exists()


@pytest.mark.parametrize("where", ["route", "flag"])
def test_unknown_model_is_a_usage_error(tmp_path, where: str) -> None:
    config = '[serve]\naet = "E"\n' + ('[[route]]\nmodel = "nosuch"\n' if where == "route" else "")
    args = ("--model", "nosuch") if where == "flag" else ()
    result, _, spool = _serve(tmp_path, config, *args)
    assert result.exit_code == 2, result.output
    assert "unknown model 'nosuch'" in result.output and "cnn" in result.output
    assert not spool.exists()
