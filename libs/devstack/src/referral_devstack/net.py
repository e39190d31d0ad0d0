"""Small networking helpers for starting local components."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, *, timeout: float = 20.0, what: str = "service") -> None:
    _poll_until(lambda: port_open(host, port), interval=0.05, timeout=timeout, host=host,
                port=port, what=what)


def _poll_until(ready: Callable[[], bool], *, interval: float, timeout: float, host: str,
                port: int, what: str) -> None:
    """Call ``ready`` every ``interval`` until it holds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not open {host}:{port} within {timeout:.0f}s")
        time.sleep(interval)


class PortTaken(RuntimeError):
    """The process meant to listen on a port exited: another one holds the port."""


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` (IPv4 and IPv6), from /proc; None without
    /proc."""
    tables = [t for t in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")) if t.exists()]
    if not tables:
        return None
    inodes = set()
    for table in tables:
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except OSError:
        pass
    return found


def wait_for_own_port(pid: int, alive: Callable[[], bool], host: str, port: int, *,
                      timeout: float = 20.0, what: str = "service") -> None:
    """Wait until process ``pid`` itself listens on ``port``. A port picked by
    :func:`free_port` can be taken by someone else before the process binds it (in a test
    run, another worker's component restarting on a port it had): then the process exits
    and PortTaken is raised, rather than the port's other owner being taken for it.
    Without /proc, any listener counts (:func:`port_open`)."""
    def listening() -> bool:
        if not alive():
            raise PortTaken(f"{what} exited before listening on {host}:{port}; "
                            "is another process using the port?")
        inodes = _listening_inodes(port)
        if inodes is None:
            return port_open(host, port)
        return bool(inodes & _socket_inodes(pid))

    _poll_until(listening, interval=0.02, timeout=timeout, host=host, port=port, what=what)
