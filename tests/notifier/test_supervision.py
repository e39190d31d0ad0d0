"""A reward consumer whose loop dies is replaced, and the new one resumes at the event the
dead one never committed (real broker, real EventConsumer)."""

from __future__ import annotations

from notifier.config import NotifierSettings
from notifier.supervision import SupervisedConsumer
from referral_kit.consuming import EventConsumer
from referral_kit.kafka import make_producer

from tests.notifier.support import address, reward
from tests.support import eventually
from tests.support.kafka import publish


class LoopKiller(BaseException):
    """Escapes EventConsumer's retry loop (which catches Exception) and ends its task,
    as a failed offset commit after an eviction from the group does."""


async def test_dead_consumer_loop_is_replaced_and_resumes_at_the_uncommitted_event(
        platform_env, kafka_bootstrap, topics):
    settings = NotifierSettings(**platform_env)
    producer = make_producer(settings, client_id="supervision-test")
    await producer.start()
    handled: list[str] = []
    killed: list[str] = []

    async def handler(envelope, _record) -> None:
        if not killed:
            killed.append(envelope.id)
            raise LoopKiller
        handled.append(envelope.id)

    supervised = SupervisedConsumer(
        lambda: EventConsumer(settings=settings, topics=[topics.rewards],
                              group_id=f"{topics.prefix}notifier", name="notifier",
                              handler=handler, producer=producer),
        check_interval_s=0.2)
    await supervised.start()
    try:
        first, second = reward(email=address()), reward(email=address())
        await publish(kafka_bootstrap, topics.rewards.name, ("ref_1", first), ("ref_1", second))
        await eventually(lambda: handled == [first.id, second.id], timeout=60,
                         message=f"handled {handled}")
        assert killed == [first.id]
        await eventually(lambda: supervised.running, message="not running after restart")
    finally:
        await supervised.stop()
        await producer.stop()
