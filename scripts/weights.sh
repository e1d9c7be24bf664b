#!/bin/sh
# Retrain every shipped weights file from scratch (deterministic: seed 0). One line per model.
set -eu
BIN=.venv/bin
$BIN/edgeimg train cnn --seed 0 --out plugins/edgeimg-cnn/edgeimg_cnn/weights/cnn.safetensors
$BIN/edgeimg train unet --seed 0 --out plugins/edgeimg-unet/edgeimg_unet/weights/unet.safetensors
$BIN/edgeimg train detector --seed 0 --out plugins/edgeimg-detect/edgeimg_detect/weights/detector.safetensors
$BIN/edgeimg train rnn --seed 0 --out plugins/edgeimg-sequence/edgeimg_sequence/weights/rnn.safetensors
$BIN/edgeimg train lstm --seed 0 --out plugins/edgeimg-sequence/edgeimg_sequence/weights/lstm.safetensors
$BIN/edgeimg train gru --seed 0 --out plugins/edgeimg-sequence/edgeimg_sequence/weights/gru.safetensors
$BIN/edgeimg train autoencoder --seed 0 --out plugins/edgeimg-autoencoder/edgeimg_autoencoder/weights/autoencoder.safetensors
$BIN/edgeimg train gan --seed 0 --out plugins/edgeimg-gan/edgeimg_gan/weights/gan.safetensors
