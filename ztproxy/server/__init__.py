"""The server layer: TLS acceptance, the HTTP connection handler, the admin listener
and the process lifecycle (start, reload, drain, stop)."""

from .app import Proxy
from .serve import serve

__all__ = ["Proxy", "serve"]
