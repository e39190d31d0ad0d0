"""Helpers shared by every test: polling with a deadline, free ports, in-process ASGI servers."""

from .polling import eventually
from .servers import ServiceProcess, free_port, serve_asgi

__all__ = ["ServiceProcess", "eventually", "free_port", "serve_asgi"]
