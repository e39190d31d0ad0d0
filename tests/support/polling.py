"""Wait for an effect by polling with a deadline; tests never sleep a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], T | Awaitable[T]], *, timeout: float = 20.0,
                     interval: float = 0.05, message: str = "condition never held") -> T:
    """Call ``check`` (sync or async) until it returns something truthy, and return that.

    Exceptions raised by ``check`` count as 'not yet'; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            last = result
        except AssertionError as exc:
            last = exc
        except Exception as exc:  # not ready yet
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (after {timeout:.0f}s; last: {last!r})")
        await asyncio.sleep(interval)
