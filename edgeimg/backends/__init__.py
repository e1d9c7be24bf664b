"""Engine backends, each registered as a default plugin through `register_backends`."""
