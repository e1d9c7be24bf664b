"""pynetdicom's internals are used in one place, and that place says when an upgrade moved them.

`edgeimg.serve.pynetdicom_adapter` subclasses and swaps pynetdicom's private classes; its
`ASSUMPTIONS` name each private thing it relies on. pyproject.toml pins the versions they were
measured on. After an upgrade, the contract test below fails naming what moved, and the grep
test keeps every other module on pynetdicom's public API.
"""

from __future__ import annotations

import re
from pathlib import Path

import pynetdicom
import pytest

from edgeimg.serve import pynetdicom_adapter as adapter
from testsupport.pins import pin_problem

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "edgeimg" / "serve" / "pynetdicom_adapter.py"
#: pynetdicom's public modules (its API reference); anything else is internal
PUBLIC_MODULES = {
    "pynetdicom",
    "pynetdicom.association",
    "pynetdicom.events",
    "pynetdicom.sop_class",
    "pynetdicom.presentation",
}
#: reaching into pynetdicom objects' internals, whatever the import
PRIVATE_USE = re.compile(
    r"\._servers\b|\._run_loop_delay\b|\.dul\b|\.state_machine\b|\.acse\b|\.msg_queue\b"
    r"|\bpynetdicom\._\w+|TRANSITION_TABLE"
)
IMPORT = re.compile(
    r"^\s*(?:from\s+(pynetdicom[\w.]*)\s+import\s+([^\n(]+|\([^)]*\))"
    r"|import\s+(pynetdicom[\w.]*))",
    re.M,
)


def test_installed_pynetdicom_is_within_the_pin():
    assert pin_problem("pynetdicom", "edgeimg.serve.pynetdicom_adapter") is None


def test_every_assumption_about_pynetdicom_internals_holds():
    problems = adapter.contract_problems()
    assert not problems, (
        f"pynetdicom {pynetdicom.__version__} moved what edgeimg.serve.pynetdicom_adapter "
        "relies on:\n  " + "\n  ".join(problems)
    )


def test_the_contract_names_what_moved(monkeypatch):
    """The contract can fail: remove what the adapter relies on and it is named."""
    from pynetdicom import fsm
    from pynetdicom.transport import AssociationSocket

    monkeypatch.delattr(AssociationSocket, "recv")
    monkeypatch.setitem(fsm.TRANSITION_TABLE, ("Evt12", "Sta6"), "AR-9")
    problems = "\n".join(adapter.contract_problems())
    assert "AssociationSocket lacks recv" in problems
    assert "('Evt12', 'Sta6') -> AR-2" in problems


def _private_uses(path: Path) -> list[str]:
    text = path.read_text()
    found = []
    for match in IMPORT.finditer(text):
        module = match[1] or match[3]
        names = re.findall(r"\w+", match[2] or "")
        if module not in PUBLIC_MODULES or any(name.startswith("_") for name in names):
            found.append(f"imports {match[0].strip()}")
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#")[0]
        hit = PRIVATE_USE.search(code)
        if hit:
            found.append(f"line {number} uses {hit[0]}")
    return found


def test_only_the_adapter_touches_pynetdicom_internals():
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in sorted((ROOT / "edgeimg").rglob("*.py"))
        if path != ADAPTER and (uses := _private_uses(path))
    }
    assert not offenders, (
        "pynetdicom internals outside edgeimg/serve/pynetdicom_adapter.py (move them there, "
        f"with an entry in its ASSUMPTIONS): {offenders}"
    )


@pytest.mark.parametrize(
    "line",
    [
        "from pynetdicom._handlers import x",
        "from pynetdicom.fsm import StateMachine",
        "import pynetdicom.dul",
        "pynetdicom._config.X = 1",
        "from pynetdicom import AE, _config",
        "ae._servers.append(s)",
        "assoc.dul.socket",
        "dul._run_loop_delay = 0",
    ],
)
def test_the_grep_catches(line, tmp_path):
    path = tmp_path / "module.py"
    path.write_text(line + "\n")
    assert _private_uses(path)
