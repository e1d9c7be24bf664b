"""edgeimg: trained imaging models next to the scanner."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("edgeimg")

__all__ = ["__version__", "hookimpl"]
