"""Run services for tests: in-process (uvicorn in the test loop) or as real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from referral_devstack.net import free_port

from .polling import eventually

__all__ = ["ServiceProcess", "free_port", "serve_asgi"]


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on a free port inside the running loop (lifespan included); yield its URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), timeout=30,
                         message="in-process server did not start")
        if task.done():
            task.result()  # surface the start-up error
            raise RuntimeError("in-process server stopped during start-up")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


class ServiceProcess:
    """A service running as a real OS process, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 port: int | None) -> None:
        self.name, self.argv, self.env, self.log_path, self.port = name, argv, env, log_path, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # handed to the child
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    async def wait_ready(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        if self.port is None:
            return

        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self.tail()}")
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(self.url + path)).status_code == 200

        try:
            await eventually(ready, timeout=timeout, interval=0.2,
                             message=f"{self.name} not ready on {self.url}{path}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (kill -9 by default)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
