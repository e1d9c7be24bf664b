"""The `--precision` option shared by build-engine, run and serve: auto by default.

`EDGEIMG_PRECISION` overrides the default (the test suite pins fp32 so that every test which
runs a model does not race every engine first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from edgeimg.engine.build import AUTO, PRECISIONS

ENV = "EDGEIMG_PRECISION"


def precision_option(help_text: str = "") -> Callable[[Any], Any]:
    """`--precision auto|fp32|fp16|bf16|int8`, default auto (or $EDGEIMG_PRECISION)."""
    return click.option(
        "--precision",
        type=click.Choice((AUTO, *PRECISIONS)),
        default=AUTO,
        envvar=ENV,
        show_default=True,
        show_envvar=True,
        help=(help_text + " " if help_text else "")
        + "auto: build every precision this device supports, verify each against torch FP32, "
        "keep the fastest that passes.",
    )


def race_summary(race: dict[str, Any] | None) -> dict[str, Any] | None:
    """What `engines --json` shows of a `--precision auto` race: the choice and every candidate."""
    if not race:
        return None
    return {
        "chosen": race.get("chosen"),
        "batch": race.get("batch"),
        "raced_at": race.get("raced_at"),
        "candidates": [
            {
                key: item.get(key)
                for key in ("backend", "precision", "status", "ms_per_batch", "drop", "reason")
            }
            for item in race.get("candidates", [])
        ],
    }


def describe_race(race: dict[str, Any] | None) -> str:
    """One line: which candidate won the race and what the others did."""
    if not race:
        return ""
    chosen = race.get("chosen") or {}
    others = []
    for item in race.get("candidates", []):
        if item.get("status") == "chosen":
            continue
        label = f"{item['backend']} {item['precision']}"
        if item.get("ms_per_batch") is not None:
            others.append(f"{label} {item['ms_per_batch']:.2f} ms")
        else:
            others.append(f"{label} {item['status']}")
    return (
        f"auto: chose {chosen.get('backend')} {chosen.get('precision')} "
        f"({chosen.get('ms_per_batch', 0):.2f} ms/batch of {race.get('batch')}), fastest "
        f"passing; " + ", ".join(others)
    )
