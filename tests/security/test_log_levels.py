"""configure_logging: records below the level are dropped before any processor runs, the
rest are rendered once, with secrets redacted."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from referral_kit.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:], root.level = handlers, level
    structlog.contextvars.clear_contextvars()


def test_below_the_level_nothing_is_processed_or_written(restore_logging, capsys) -> None:
    processed: list[str] = []

    configure_logging("svc", level="WARNING")
    structlog.configure(processors=[
        *structlog.get_config()["processors"][:1],
        lambda _, __, event: processed.append(event["event"]) or event,
        *structlog.get_config()["processors"][1:]])
    log = structlog.get_logger("svc.test")
    log.info("email sent", api_key="sk_live_abcdefgh")
    log.warning("smtp unavailable", token="t0ps3cret", dsn="postgresql://u:pw@db/x")

    assert processed == ["smtp unavailable"]
    [line] = capsys.readouterr().err.splitlines()
    assert "smtp unavailable" in line and "service=svc" in line
    assert "t0ps3cret" not in line and "pw@" not in line
