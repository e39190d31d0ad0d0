"""The harness itself: real broker, real PostgreSQL, real SMTP, isolated per test."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from referral_events import TopicRegistry

from tests.support import eventually


async def test_broker_round_trip(kafka_bootstrap: str, topics: TopicRegistry) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False,
                                acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.clicks.name, b"hello", key=b"CODE")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topics.clicks.name, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        batch = await eventually(lambda: consumer.getmany(timeout_ms=200), message="no record")
        [record] = [r for rs in batch.values() for r in rs]
        assert (record.key, record.value) == (b"CODE", b"hello")
    finally:
        await consumer.stop()


async def test_each_test_gets_its_own_database(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
        await conn.execute("CREATE TABLE marker (id int)")
    finally:
        await conn.close()


async def test_smtp_sink_catches_and_refuses(smtp_sink) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "hi"
    msg.set_content("body")
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as smtp:
        smtp.send_message(msg)
    await eventually(lambda: len(smtp_sink.messages) == 1)
    assert smtp_sink.messages[0]["Subject"] == "hi"
    smtp_sink.set_failure(550)
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port) as smtp:
        try:
            smtp.send_message(msg)
            raise AssertionError("550 expected")
        except smtplib.SMTPRecipientsRefused as exc:
            assert exc.recipients["b@example.com"][0] == 550
