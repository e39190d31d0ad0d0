"""Handle attribution decisions: one transaction per event, keyed by the event id.

The processed event id, the decision row, the rewards and their outbox events commit
together, so a redelivered event, or a second event about the same conversion, changes
nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from referral_events import Envelope, ReferralAttributed, ReferralRejected, TopicRegistry
from referral_kit.consuming import PoisonEvent

from ..holds import add_duration
from ..identifiers import new_id
from ..lifecycle import announce_created
from ..rules import ProgramRules, decide_rewards, rule_from_json

log = structlog.get_logger(__name__)
CONSUMER = "rewards-worker"


class DecisionHandler:
    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry) -> None:
        self._pool, self._topics = pool, topics

    async def __call__(self, envelope: Envelope[Any], _record: Any) -> None:
        data = envelope.data
        async with self._pool.acquire() as conn, conn.transaction():
            first_time = await conn.fetchval(
                "INSERT INTO processed_events (event_id, consumer) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING RETURNING true", envelope.id, CONSUMER)
            if not first_time:
                return
            if isinstance(data, ReferralRejected):
                await self._record_rejection(conn, envelope.id, data)
            elif isinstance(data, ReferralAttributed):
                await self._reward(conn, envelope.id, data)

    async def _record_rejection(self, conn: asyncpg.Connection, event_id: str,
                                data: ReferralRejected) -> None:
        await conn.execute(
            "INSERT INTO referral_decisions (program_id, conversion_id, outcome, reason,"
            " referrer_id, code, channel, order_amount, currency, converted_at, decided_at,"
            " event_id) VALUES ($1,$2,'rejected',$3,$4,$5,$6,$7,$8,$9,$10,$11)"
            " ON CONFLICT DO NOTHING",
            data.program_id, data.conversion_id, data.reason.value, data.referrer_id, data.code,
            data.channel, data.amount, data.currency, data.converted_at, data.decided_at,
            event_id)

    async def _reward(self, conn: asyncpg.Connection, event_id: str,
                      data: ReferralAttributed) -> None:
        program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", data.program_id)
        referrer = await conn.fetchrow(
            "SELECT * FROM referrers WHERE id = $1 AND program_id = $2",
            data.referrer_id, data.program_id)
        if program is None or referrer is None:
            raise PoisonEvent(f"no referrer {data.referrer_id} in programme {data.program_id}",
                              field="data.referrer_id")
        decided = await conn.fetchval(
            "INSERT INTO referral_decisions (program_id, conversion_id, outcome, referrer_id,"
            " code, channel, order_amount, currency, converted_at, decided_at, event_id)"
            " VALUES ($1,$2,'attributed',$3,$4,$5,$6,$7,$8,$9,$10)"
            " ON CONFLICT DO NOTHING RETURNING true",
            data.program_id, data.conversion_id, data.referrer_id, data.code, data.channel,
            data.amount, data.currency, data.converted_at, data.decided_at, event_id)
        if not decided:
            log.info("conversion already decided; no second reward",
                     program_id=data.program_id, conversion_id=data.conversion_id)
            return
        rules = ProgramRules(referrer_reward=rule_from_json(program["referrer_reward"]),
                             friend_reward=rule_from_json(program["friend_reward"]),
                             min_order_amount=program["min_order_amount"])
        available_at = add_duration(data.decided_at, program["hold_period"])
        for decision in decide_rewards(rules, order_amount=data.amount):
            if decision.beneficiary == "referrer":
                recipient = (referrer["id"], referrer["email"], referrer["name"],
                             referrer["locale"])
            else:
                recipient = (data.customer.id, data.customer.email, None, None)
            reward = await conn.fetchrow(
                "INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id,"
                " kind, amount, currency, status, available_at, expires_after, recipient_id,"
                " recipient_email, recipient_name, recipient_locale, order_amount, channel,"
                " reason, source_event_id, created_at, updated_at)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,"
                "         $20,$20)"
                " ON CONFLICT (program_id, conversion_id, beneficiary) DO NOTHING RETURNING *",
                new_id("rwd"), data.program_id, data.referrer_id, decision.beneficiary,
                data.conversion_id, decision.kind.value, decision.amount, program["currency"],
                decision.status, available_at, decision.expires_after, *recipient, data.amount,
                data.channel, decision.reason, event_id, data.decided_at)
            if reward is not None:
                await announce_created(conn, self._topics, reward, program)
