"""What a fence (the one module that relies on a library's internals) declares and checks.

A fence lists its assumptions as (what, check) pairs, each check returning a problem or None;
`problems` runs them all, so an upgrade that moved several names reports every one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: one assumption: what is relied on, and a check that says how it no longer holds (or None)
Assumption = tuple[str, Callable[[], str | None]]


def problems(assumptions: Sequence[Assumption]) -> list[str]:
    """One line per broken assumption; a check that raises is broken too."""
    found = []
    for what, check in assumptions:
        try:
            problem = check()
        except Exception as error:
            problem = f"checking it raised {error!r}"
        if problem:
            found.append(f"{what}: {problem}")
    return found
