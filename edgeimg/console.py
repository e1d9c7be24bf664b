"""Terminal output: rich for people, a single JSON document for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(document: Any) -> None:
    """Write one JSON document to stdout and nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def warn(message: str) -> None:
    """One warning line on stderr."""
    err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)
