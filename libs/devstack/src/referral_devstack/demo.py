"""Create (or find again) the demo programme and referrer through the admin API."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@dataclass
class Demo:
    program_id: str
    publishable_key: str
    secret_key: str
    referrer_id: str
    code: str
    referral_url: str
    tracker_url: str
    currency: str = "EUR"


async def seed_demo(*, rewards_url: str, tracker_url: str, admin_token: str, landing_url: str,
                    state_path: Path) -> Demo:
    """Idempotent: a programme recorded in ``state_path`` that still exists is reused."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=rewards_url, headers=headers, timeout=10) as api:
        state = await asyncio.to_thread(_read_state, state_path)
        if state and (await api.get(f"/v1/programs/{state['program_id']}")).status_code == 200:
            program = state
        else:
            created = await api.post("/v1/programs", json={
                "name": "Demo Shop",
                "landing_url": landing_url,
                "currency": "EUR",
                "hold_period": "PT1M",
                "referrer_reward": {"kind": "cash", "amount": 1000},
                "friend_reward": {"kind": "discount", "amount": 500},
                "marketer_emails": ["marketing@demo-shop.example"],
                "locale": "en",
            })
            created.raise_for_status()
            body = created.json()
            program = {"program_id": body["id"], "publishable_key": body["publishable_key"],
                       "secret_key": body["secret_key"]}
        enrolled = await api.post(f"/v1/programs/{program['program_id']}/referrers", json={
            "external_id": "demo-referrer", "email": "ann@demo-customer.example",
            "name": "Ann", "locale": "en",
        })
        enrolled.raise_for_status()
        referrer = enrolled.json()
    demo = Demo(program_id=program["program_id"], publishable_key=program["publishable_key"],
                secret_key=program["secret_key"], referrer_id=referrer["id"],
                code=referrer["code"], referral_url=referrer["referral_url"],
                tracker_url=tracker_url)
    await asyncio.to_thread(_write_state, state_path, asdict(demo))
    return demo


def _read_state(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


async def link_is_live(tracker_url: str, code: str) -> bool:
    """True once the tracker redirects the code (asked as a crawler, so it is not counted)."""
    async with httpx.AsyncClient(timeout=2) as client:
        response = await client.get(f"{tracker_url}/r/{code}", headers={"User-Agent": BOT_UA})
        return response.status_code == 302
