"""The rewards worker's probe endpoint (it has no web app): what Kubernetes and compose ask."""

from __future__ import annotations

import socket

import httpx
from rewards.worker.health import WorkerHealthServer, WorkerHealthSettings, start_probes


async def test_probes_answer_health_readiness_and_metrics():
    checks = {"database": True, "consumer": True}

    async def readiness() -> dict[str, bool]:
        return dict(checks)

    server = WorkerHealthServer(readiness, host="127.0.0.1", port=0)
    assert await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            checks["consumer"] = False
            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"] == {"database": True, "consumer": False}
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and "python_info" in metrics.text
            assert (await http.get("/nope")).status_code == 404
            assert (await http.post("/healthz")).status_code == 405
            assert (await http.head("/healthz")).status_code == 200
    finally:
        await server.stop()
    assert server.port is None


async def test_a_failing_readiness_check_is_not_ready():
    async def broken() -> dict[str, bool]:
        raise RuntimeError("pool closed")

    server = WorkerHealthServer(broken, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            assert (await http.get("/readyz")).status_code == 503
    finally:
        await server.stop()


async def test_a_taken_port_does_not_stop_the_worker():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def readiness() -> dict[str, bool]:
            return {}

        server = WorkerHealthServer(readiness, host="127.0.0.1", port=port)
        assert await server.start() is False
        assert server.port is None
        await server.stop()


async def test_start_probes_checks_database_and_consumer(monkeypatch):
    class Conn:
        async def fetchval(self, _sql: str) -> bool:
            return True

    class Acquire:
        async def __aenter__(self) -> Conn:
            return Conn()

        async def __aexit__(self, *exc: object) -> None:
            return None

    class Pool:
        def acquire(self, timeout: float) -> Acquire:
            return Acquire()

    class Consumer:
        running = True

    monkeypatch.setenv("REWARDS_WORKER_PORT", "0")
    assert WorkerHealthSettings().port == 0
    off = await start_probes(Pool(), Consumer())  # port 0 in the settings: no endpoint
    assert off.port is None
    probes = await start_probes(Pool(), Consumer(),
                                WorkerHealthSettings(host="127.0.0.1", port=_free_port()))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{probes.port}") as http:
            body = (await http.get("/readyz")).json()
        assert body == {"status": "ready", "checks": {"database": True, "consumer": True}}
    finally:
        await probes.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
