"""`rediffuse serve`: a local page to watch and steer trained runs (the server, the frames it streams, the page)."""

from rediffuse.serve.server import Limits, Server, serve

__all__ = ["Limits", "Server", "serve"]
