"""`python -m edgeimg` runs the CLI."""

from edgeimg.cli import main

main()
