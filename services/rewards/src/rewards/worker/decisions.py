"""Handle attribution decisions: one transaction per event, keyed by the event id.

The processed event id, the decision row, the rewards and their outbox events commit
together, so a redelivered event, or a second event about the same conversion, changes
nothing. The referrer's row is locked first, so its tiers and caps are decided one referral
at a time however many workers run; the programme budget is locked when it is capped.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from referral_events import Envelope, ReferralAttributed, ReferralRejected, TopicRegistry
from referral_kit.consuming import PoisonEvent

from ..fraud import FraudSettings, FraudVerdict, evaluate
from ..holds import add_duration
from ..identifiers import new_id
from ..lifecycle import announce_created
from ..reversals import apply_pending_reversals
from ..rules import ProgramRules, RewardDecision, decide_rewards, rules_from_program
from .standing import load_standing, observe

log = structlog.get_logger(__name__)
CONSUMER = "rewards-worker"


class DecisionHandler:
    def __init__(self, pool: asyncpg.Pool, topics: TopicRegistry) -> None:
        self._pool, self._topics = pool, topics
        # Parsed rules per (programme, version): a changed programme has a new version.
        self._policies: OrderedDict[tuple[str, int], tuple[ProgramRules, FraudSettings]] = (
            OrderedDict())

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

    def _policy(self, program: Any) -> tuple[ProgramRules, FraudSettings]:
        key = (program["id"], program["version"])
        if (policy := self._policies.get(key)) is None:
            policy = (rules_from_program(program),
                      FraudSettings.model_validate(program["fraud"] or {}))
            self._policies[key] = policy
            if len(self._policies) > 1000:
                self._policies.popitem(last=False)
        return policy

    async def _reward(self, conn: asyncpg.Connection, event_id: str,
                      data: ReferralAttributed) -> None:
        program = await conn.fetchrow("SELECT * FROM programs WHERE id = $1", data.program_id)
        referrer = await conn.fetchrow(
            "SELECT * FROM referrers WHERE id = $1 AND program_id = $2 FOR UPDATE",
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
        rules, fraud_settings = self._policy(program)
        verdict = evaluate(fraud_settings, await observe(conn, fraud_settings, data, referrer))
        standing = await load_standing(conn, rules, program_id=data.program_id,
                                       referrer_id=data.referrer_id, decided_at=data.decided_at)
        available_at = add_duration(data.decided_at, program["hold_period"])
        if verdict.extends_hold:
            available_at = add_duration(available_at, fraud_settings.extend_hold_by)
        for decision in decide_rewards(rules, order_amount=data.amount, standing=standing,
                                       refused=verdict.reason):
            await self._insert(conn, event_id, data, program, referrer, decision, verdict,
                               available_at)

    async def _insert(self, conn: asyncpg.Connection, event_id: str, data: ReferralAttributed,
                      program: Any, referrer: Any, decision: RewardDecision,
                      verdict: FraudVerdict, available_at: datetime) -> None:
        if decision.beneficiary == "referrer":
            recipient = (referrer["id"], referrer["email"], referrer["name"], referrer["locale"])
        else:
            recipient = (data.customer.id, data.customer.email, None, None)
        # Any unique key (conversion + side + purpose, one standing bonus per milestone)
        # turns a second insert into a no-op.
        reward = await conn.fetchrow(
            "INSERT INTO rewards (id, program_id, referrer_id, beneficiary, conversion_id,"
            " kind, amount, currency, status, available_at, expires_after, recipient_id,"
            " recipient_email, recipient_name, recipient_locale, order_amount, channel,"
            " reason, source_event_id, created_at, updated_at, purpose, milestone,"
            " fraud_signals)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,"
            "         $20,$20,$21,$22,$23)"
            " ON CONFLICT DO NOTHING RETURNING *",
            new_id("rwd"), data.program_id, data.referrer_id, decision.beneficiary,
            data.conversion_id, decision.kind.value, decision.amount, program["currency"],
            verdict.status_of(decision.status), available_at, decision.expires_after,
            *recipient, data.amount, data.channel, decision.reason, event_id, data.decided_at,
            decision.purpose, decision.milestone,
            [s.model_dump(mode="json") for s in verdict.signals])
        if reward is not None:
            await announce_created(conn, self._topics, reward, program)
            await apply_pending_reversals(conn, self._topics, reward)  # refund came first
