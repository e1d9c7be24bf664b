#!/bin/sh
# The main job on embedded defaults: what this box has, which models are installed.
set -eu
BIN=.venv/bin
$BIN/edgeimg doctor
$BIN/edgeimg models
