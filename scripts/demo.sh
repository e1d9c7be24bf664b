#!/bin/sh
# `make demo`: the main job on embedded defaults (see scripts/demo.py).
set -eu
.venv/bin/edgeimg doctor
export PYTHONPATH=.
exec .venv/bin/python scripts/demo.py
