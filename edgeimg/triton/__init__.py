"""Triton Inference Server: the identity an exported or hosted engine publishes, the model
repository `export-triton` writes, and the PyTriton server `edgeimg host` runs.

The client side (the `triton` engine backend) lives in `edgeimg.backends.triton`.
"""
