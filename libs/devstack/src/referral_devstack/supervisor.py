"""Run the stack's processes in the foreground with prefixed, coloured logs.

Each child runs in its own session (process group) so a terminal Ctrl-C reaches only the
supervisor, which then stops children in reverse start order: SIGTERM to the whole group,
SIGKILL after a grace period. Nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field

_COLOURS = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    colour: int
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    expected_exit: bool = field(default=False)


class Supervisor:
    def __init__(self, base_env: dict[str, str]) -> None:
        self.base_env = base_env
        self.children: list[Child] = []
        self.width = 12
        self.failed = asyncio.Event()
        self.failure: str | None = None

    def say(self, name: str, line: str, colour: int = 37) -> None:
        prefix = f"{name:<{self.width}}|"
        if sys.stdout.isatty():
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        sys.stdout.write(f"{prefix} {line}\n")
        sys.stdout.flush()

    async def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, {**self.base_env, **(env or {})},
                      _COLOURS[len(self.children) % len(_COLOURS)])
        child.proc = await asyncio.create_subprocess_exec(
            *argv, env=child.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def run_once(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run a set-up command to completion (e.g. migrations); raise if it fails."""
        child = await self.start(name, argv, env)
        child.expected_exit = True
        assert child.proc is not None
        code = await child.proc.wait()
        if child.pump:
            await child.pump
        self.children.remove(child)
        if code != 0:
            raise RuntimeError(f"{name} failed with exit code {code}")

    async def _pump(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        async for raw in child.proc.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip(), child.colour)
        code = await child.proc.wait()
        if not child.expected_exit:
            self.failure = f"{child.name} exited with code {code}"
            self.say(child.name, f"exited with code {code}", child.colour)
            self.failed.set()

    async def stop_all(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            child.expected_exit = True
            self._signal(child, signal.SIGTERM)
        for child in reversed(self.children):
            assert child.proc is not None
            try:
                await asyncio.wait_for(child.proc.wait(), grace)
            except TimeoutError:
                self.say(child.name, "did not stop in time; killing", child.colour)
                self._signal(child, signal.SIGKILL)
                await child.proc.wait()
            if child.pump:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 2)

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        if child.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)
