"""Rules and fraud settings through the admin API: typed, defaulted, validated by field."""

from __future__ import annotations

import httpx
import pytest
from rewards.api.app import create_app

from tests.support import serve_asgi

PROGRAM = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
           "referrer_reward": {"kind": "cash", "amount": 1000}}


@pytest.fixture
async def admin(rewards_settings, admin_token):
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


async def test_rules_and_fraud_settings_round_trip(admin) -> None:
    created = await admin.post("/v1/programs", json={
        **PROGRAM, "fraud": {"velocity_per_hour": {"max_per_hour": 5, "action": "extend_hold"},
                             "blocked_countries": {"countries": ["kp"]}},
        "tiers": [{"from_referral": 10, "bonus": 5000}, {"from_referral": 5, "percent": 7.5}],
        "caps": {"per_referrer_month": 20_000, "mode": "reject"}})
    assert created.status_code == 201, created.text
    program = created.json()
    fraud = program["fraud"]
    assert fraud["velocity_per_hour"] == {"enabled": True, "max_per_hour": 5,
                                          "action": "extend_hold"}
    assert fraud["blocked_countries"]["countries"] == ["KP"]
    assert fraud["email_alias"] == {"enabled": True, "action": "reject"}  # defaults filled in
    assert [t["from_referral"] for t in program["tiers"]] == [5, 10]  # kept in order
    assert program["caps"]["mode"] == "reject"

    plain = (await admin.post("/v1/programs", json={**PROGRAM, "fraud": {}})).json()
    assert plain["fraud"]["disposable_email"]["action"] == "flag"
    assert plain["caps"]["mode"] == "cap"

    patched = await admin.patch(f"/v1/programs/{program['id']}",
                                json={"fraud": {"same_ip_or_device": {"enabled": False}}})
    assert patched.status_code == 200
    assert patched.json()["fraud"]["same_ip_or_device"]["enabled"] is False
    assert patched.json()["fraud"]["velocity_per_hour"]["max_per_hour"] == 10  # replaced whole


@pytest.mark.parametrize(("body", "field"), [
    ({"fraud": {"velocity": {}}}, "fraud.velocity"),
    ({"fraud": {"email_alias": {"action": "shrug"}}}, "fraud.email_alias.action"),
    ({"fraud": {"extend_hold_by": "a week"}}, "fraud.extend_hold_by"),
    ({"fraud": {"blocked_countries": {"countries": ["Holland"]}}},
     "fraud.blocked_countries.countries.0"),
    ({"caps": {"mode": "maybe"}}, "caps.mode"),
    ({"tiers": [{"from_referral": 2}]}, "tiers.0"),
    ({"tiers": [{"from_referral": 2, "amount": 1, "percent": 1}]}, "tiers.0"),
    ({"tiers": [{"from_referral": 2, "amount": 1}, {"from_referral": 2, "bonus": 1}]}, "tiers"),
    ({"referrer_reward": None, "tiers": [{"from_referral": 2, "amount": 1}]}, "tiers"),
])
async def test_invalid_rules_name_the_field(admin, body, field) -> None:
    response = await admin.post("/v1/programs", json={**PROGRAM, **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.json()


async def test_referrer_ip_and_device_are_accepted_but_never_shown(admin) -> None:
    program = (await admin.post("/v1/programs", json=PROGRAM)).json()
    url = f"/v1/programs/{program['id']}/referrers"
    enrolled = await admin.post(url, json={"external_id": "c-1", "email": "ann@example.com",
                                           "ip": "203.0.113.9", "device_id": "dev-1"})
    assert enrolled.status_code == 201, enrolled.text
    assert not {"ip", "ip_hashes", "device_id", "device_ids"} & set(enrolled.json())
    assert "203.0.113.9" not in enrolled.text
    bad = await admin.post(url, json={"external_id": "c-2", "email": "bo@example.com",
                                      "ip": "not-an-ip"})
    assert bad.status_code == 422 and bad.json()["field"] == "ip"
    again = await admin.post(url, json={"external_id": "c-1", "email": "ann@example.com",
                                        "ip": "203.0.113.10"})
    assert again.status_code == 200 and again.json()["id"] == enrolled.json()["id"]
