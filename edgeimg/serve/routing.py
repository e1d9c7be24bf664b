"""Which models run on which series, and where their outputs go: the `--config` routing tables.

Pure data and matching, so the rules can be checked (and tested) without a network or a model:

    [[destination]]
    name = "pacs"
    peer = "ORTHANC@127.0.0.1:4242"  # or a DICOMweb base URL, https://host/dicom-web (STOW-RS)
    tls_ca = "ca.pem"            # an https peer's certificate is checked against this CA
    deid = false                 # true, or {retain_uids = true, clean_descriptors = true}

    [[route]]
    model = "cnn"
    modality = ["CT"]            # every filter given must match; none given matches everything
    sop_class = ["1.2.840.10008.5.1.4.1.1.2"]
    body_part = ["CHEST"]        # BodyPartExamined, case-insensitive
    min_slices = 20
    max_slices = 2000
    destinations = ["pacs"]      # default: every destination
    priors_from = "PACS@10.0.0.5:104"  # where this route's model gets its priors (see below)

`--model NAME` is a route without filters to every destination; `--forward AET@HOST:PORT` (or a
DICOMweb URL) is a destination named after its address, without de-identification.
`--priors-from AET@HOST:PORT` is where routes without their own `priors_from` fetch the prior
studies of a model that declares `priors` (edgeimg.serve.priors).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class RoutingError(ValueError):
    """A routing table that cannot be used; the message names the file and the bad key."""


@dataclass(frozen=True)
class DeidSettings:
    """The PS3.15 options of a de-identifying destination (the key lives in the spool)."""

    retain_uids: bool = False
    clean_descriptors: bool = False
    keep_private: bool = False


@dataclass(frozen=True)
class Destination:
    """Where results go: `peer` is `AET@HOST:PORT` or a DICOMweb base URL (checked against
    `tls_ca` when https); `deid` set means de-identify first."""

    name: str
    peer: str
    deid: DeidSettings | None = None
    tls_ca: str | None = None


@dataclass(frozen=True)
class SeriesFacts:
    """What routing looks at in a complete series (from one header and the queue's count)."""

    modality: str = ""
    sop_class: str = ""
    body_part: str = ""
    slices: int = 0


@dataclass(frozen=True)
class Route:
    """Run `model` on series that pass every given filter; send outputs to `destinations`
    (names; empty means every destination)."""

    model: str
    modality: frozenset[str] = frozenset()
    sop_class: frozenset[str] = frozenset()
    body_part: frozenset[str] = frozenset()
    min_slices: int | None = None
    max_slices: int | None = None
    destinations: tuple[str, ...] = ()
    priors_from: str | None = None

    def matches(self, facts: SeriesFacts) -> bool:
        """True when the series passes every filter this route sets."""
        checks = (
            not self.modality or facts.modality.upper() in self.modality,
            not self.sop_class or facts.sop_class in self.sop_class,
            not self.body_part or facts.body_part.upper() in self.body_part,
            self.min_slices is None or facts.slices >= self.min_slices,
            self.max_slices is None or facts.slices <= self.max_slices,
        )
        return all(checks)


@dataclass(frozen=True)
class Routing:
    """Routes and named destinations; `models_for` answers what runs on a series and where."""

    routes: tuple[Route, ...] = ()
    destinations: Mapping[str, Destination] = field(default_factory=dict)
    priors_from: str | None = None

    @property
    def models(self) -> list[str]:
        """Every model some route may run, in the order first named."""
        return list(dict.fromkeys(route.model for route in self.routes))

    def models_for(self, facts: SeriesFacts) -> list[tuple[str, list[Destination]]]:
        """(model, its destinations) for each model whose routes match; a model matched by
        several routes runs once and sends to the union of their destinations."""
        chosen: dict[str, dict[str, Destination]] = {}
        for route in self.routes:
            if route.matches(facts):
                targets = chosen.setdefault(route.model, {})
                for name in route.destinations or self.destinations:
                    targets[name] = self.destinations[name]
        return [(model, list(targets.values())) for model, targets in chosen.items()]

    def destinations_for(self, model: str, facts: SeriesFacts) -> list[Destination]:
        """Where `model`'s outputs for this series go (none when no route of it matches)."""
        return dict(self.models_for(facts)).get(model, [])

    def priors_source(self, model: str, facts: SeriesFacts) -> str | None:
        """Where `model` fetches priors for this series: the first matching route's own
        `priors_from`, else `--priors-from` (None: nowhere, the job runs without priors)."""
        for route in self.routes:
            if route.model == model and route.priors_from and route.matches(facts):
                return route.priors_from
        return self.priors_from

    def with_flags(
        self,
        models: Iterable[str],
        forwards: Iterable[str],
        tls_ca: str | None = None,
        priors_from: str | None = None,
    ) -> Routing:
        """Add `--model` (a route for everything, to every destination), `--forward`
        (an https one verified against `tls_ca`) and `--priors-from`."""
        destinations = dict(self.destinations)
        for peer in forwards:
            destinations.setdefault(peer, Destination(peer, peer, tls_ca=tls_ca))
        routes = [*self.routes, *(Route(model) for model in models)]
        return Routing(tuple(dict.fromkeys(routes)), destinations, priors_from or self.priors_from)


def parse_routing(data: Mapping[str, Any], source: str) -> Routing:
    """The `[[destination]]` and `[[route]]` tables of a config file read as TOML.

    `source` (the file name) starts every error message, so a bad config says where it is.
    """
    destinations: dict[str, Destination] = {}
    for index, table in enumerate(_tables(data, "destination", source), 1):
        where = f"{source}: [[destination]] #{index}"
        destination = _destination(table, where)
        if destination.name in destinations:
            raise RoutingError(f"{where}: name {destination.name!r} is used twice")
        destinations[destination.name] = destination
    routes = []
    for index, table in enumerate(_tables(data, "route", source), 1):
        routes.append(_route(table, f"{source}: [[route]] #{index}", destinations))
    return Routing(tuple(routes), destinations)


def _tables(data: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise RoutingError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    return tables


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise RoutingError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")


def _destination(table: Mapping[str, Any], where: str) -> Destination:
    from edgeimg.dicomweb import check_url, is_url
    from edgeimg.net import PeerError, parse_peer

    _check_keys(table, ("name", "peer", "deid", "tls_ca"), where)
    name = _required_string(table, "name", where)
    if not _NAME.match(name):
        raise RoutingError(f"{where}: name {name!r} must be letters, digits, '_', '.', '-'")
    peer_text = _required_string(table, "peer", where)
    try:
        peer = check_url(peer_text) if is_url(peer_text) else str(parse_peer(peer_text))
    except (PeerError, ValueError) as error:
        raise RoutingError(f"{where}: peer: {error}") from None
    tls_ca = _required_string(table, "tls_ca", where) if "tls_ca" in table else None
    if tls_ca is not None and not os.path.isfile(tls_ca):
        raise RoutingError(f"{where}: tls_ca {tls_ca!r} is not a file")
    deid = _deid(table.get("deid", False), f"{where}: deid")
    return Destination(name, peer, deid, tls_ca)


def _deid(value: Any, where: str) -> DeidSettings | None:
    if value is False:
        return None
    if value is True:
        return DeidSettings()
    if not isinstance(value, Mapping):
        raise RoutingError(f"{where}: must be true, false or a table of options, not {value!r}")
    known = [option.name for option in fields(DeidSettings)]
    _check_keys(value, known, where)
    for key, flag in value.items():
        if not isinstance(flag, bool):
            raise RoutingError(f"{where}: {key} must be true or false, not {flag!r}")
    return DeidSettings(**value)


def _route(table: Mapping[str, Any], where: str, destinations: Mapping[str, Any]) -> Route:
    keys = (
        "model",
        "modality",
        "sop_class",
        "body_part",
        "min_slices",
        "max_slices",
        "destinations",
        "priors_from",
    )
    _check_keys(table, keys, where)
    model = _required_string(table, "model", where)
    sop_classes = _strings(table, "sop_class", where)
    for uid in sop_classes:
        if not _UID.match(uid) or len(uid) > 64:
            raise RoutingError(f"{where}: sop_class {uid!r} is not a UID")
    low, high = _count(table, "min_slices", where), _count(table, "max_slices", where)
    if low is not None and high is not None and low > high:
        raise RoutingError(f"{where}: min_slices {low} is above max_slices {high}")
    targets = _strings(table, "destinations", where)
    if "destinations" in table and not targets:
        raise RoutingError(f"{where}: destinations is empty (leave it out to mean all)")
    for name in targets:
        if name not in destinations:
            known = ", ".join(destinations) or "none defined"
            raise RoutingError(f"{where}: destinations: no destination {name!r} ({known})")
    return Route(
        model=model,
        modality=frozenset(item.upper() for item in _strings(table, "modality", where)),
        sop_class=frozenset(sop_classes),
        body_part=frozenset(item.upper() for item in _strings(table, "body_part", where)),
        min_slices=low,
        max_slices=high,
        destinations=tuple(dict.fromkeys(targets)),
        priors_from=_priors_from(table, where),
    )


def _priors_from(table: Mapping[str, Any], where: str) -> str | None:
    """A route's `priors_from`: a DICOM peer (query/retrieve is C-FIND and C-GET/C-MOVE)."""
    from edgeimg.net import PeerError, parse_peer

    if "priors_from" not in table:
        return None
    try:
        return str(parse_peer(_required_string(table, "priors_from", where)))
    except PeerError as error:
        raise RoutingError(f"{where}: priors_from: {error}") from None


def _required_string(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RoutingError(f"{where}: {key} is required (a non-empty string)")
    return value.strip()


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    """A string or a list of strings (one value may be written without brackets)."""
    value = table.get(key, [])
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise RoutingError(f"{where}: {key} must be a string or a list of strings")
    return [item.strip() for item in items]


def _count(table: Mapping[str, Any], key: str, where: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RoutingError(f"{where}: {key} must be a whole number >= 0, not {value!r}")
    return value
