"""The allow list: remote peers are denied unless listed, and host binding is exact."""

import pytest

from edgeimg.serve.security import SecurityError, is_allowed, parse_allow


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("not-an-address", False),
    ],
)
def test_without_allow_list_only_local_peers_may_call(host, allowed):
    assert is_allowed([], "ANY", host) is allowed


def test_listed_titles_and_hosts():
    entries = parse_allow(["SCANNER", "CT2@10.0.0.5"])
    assert is_allowed(entries, "SCANNER", "10.9.9.9")
    assert is_allowed(entries, "CT2", "10.0.0.5")
    assert not is_allowed(entries, "CT2", "10.0.0.6")
    assert not is_allowed(entries, "OTHER", "127.0.0.1")


@pytest.mark.parametrize("value", ["", "@host", "A" * 17, "CT@"])
def test_bad_allow_entries(value):
    with pytest.raises(SecurityError):
        parse_allow([value])
