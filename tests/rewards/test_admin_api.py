"""Admin API against real PostgreSQL and broker: programmes, referrers, registry publishing."""

from __future__ import annotations

import httpx
import pytest
from referral_events import ProgramEntry, ReferralCodeEntry
from referral_events.identity import email_hash, key_hash
from rewards.api.app import create_app

from tests.support import serve_asgi
from tests.support.kafka import collect, of_type

PROGRAM = {"name": "Shop", "landing_url": "https://shop.example/", "currency": "EUR",
           "referrer_reward": {"kind": "cash", "amount": 1000}}


@pytest.fixture
async def admin(rewards_settings, admin_token):
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


async def test_programme_lifecycle_and_registry(admin, kafka_bootstrap, topics) -> None:
    created = await admin.post("/v1/programs", json=PROGRAM)
    assert created.status_code == 201, created.text
    program = created.json()
    assert program["publishable_key"].startswith("pk_") and program["secret_key"].startswith("sk_")
    assert (program["attribution_window_days"], program["attribution_model"],
            program["hold_period"], program["new_customers_only"]) == (30, "last_click", "P14D",
                                                                       True)
    fetched = (await admin.get(f"/v1/programs/{program['id']}")).json()
    assert "secret_key" not in fetched and fetched["name"] == "Shop"

    patched = await admin.patch(f"/v1/programs/{program['id']}",
                                json={"attribution_model": "first_click", "hold_period": "PT2S"})
    assert patched.status_code == 200 and patched.json()["version"] == 2

    enrolled = await admin.post(f"/v1/programs/{program['id']}/referrers",
                                json={"external_id": "c-1", "email": "Ann.X+y@gmail.com"})
    assert enrolled.status_code == 201
    referrer = enrolled.json()
    again = await admin.post(f"/v1/programs/{program['id']}/referrers",
                             json={"external_id": "c-1", "email": "other@example.com"})
    assert again.status_code == 200 and again.json()["id"] == referrer["id"]
    assert again.json()["code"] == referrer["code"]
    assert referrer["referral_url"] == f"{'http://127.0.0.1:8001'}/r/{referrer['code']}"

    events = await collect(kafka_bootstrap, topics.registry.name, until=lambda ev: len(
        of_type(ev, ReferralCodeEntry)) >= 1 and len(of_type(ev, ProgramEntry)) >= 2)
    programs = of_type(events, ProgramEntry)
    assert [p.version for p in programs] == [1, 2]
    assert programs[-1].attribution_model == "first_click"
    assert programs[-1].secret_key_hash == key_hash(program["secret_key"])
    assert programs[-1].publishable_key_hash == key_hash(program["publishable_key"])
    [code] = of_type(events, ReferralCodeEntry)
    assert (code.code, code.referrer_id, code.referrer_external_id) == (
        referrer["code"], referrer["id"], "c-1")
    assert code.referrer_email_hash == email_hash("annx@gmail.com")
    assert all(program["secret_key"] not in e.model_dump_json() for e in events)


@pytest.mark.parametrize(("body", "field"), [
    ({**PROGRAM, "currency": "euro"}, "currency"),
    ({**PROGRAM, "landing_url": "not a url"}, "landing_url"),
    ({**PROGRAM, "hold_period": "two weeks"}, "hold_period"),
    ({**PROGRAM, "referrer_reward": {"kind": "cash"}}, "referrer_reward"),
    ({**PROGRAM, "referrer_reward": {"kind": "gold", "amount": 1}}, "referrer_reward.kind"),
    ({k: v for k, v in PROGRAM.items() if k != "name"}, "name"),
])
async def test_invalid_programme_names_the_field(admin, body, field) -> None:
    response = await admin.post("/v1/programs", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"] == field, problem
    assert field in problem["detail"]


async def test_admin_token_required(rewards_settings) -> None:
    async with serve_asgi(create_app(rewards_settings)) as url, httpx.AsyncClient(
            base_url=url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
            response = await client.post("/v1/programs", json=PROGRAM, headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["field"] == "Authorization"
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json()["checks"] == {"database": True}


async def test_unknown_ids_are_404_problems(admin) -> None:
    for path in ("/v1/programs/prg_nope", "/v1/referrers/ref_nope",
                 "/v1/programs/prg_nope/rewards"):
        response = await admin.get(path)
        assert response.status_code == 404 and response.json()["detail"], path
    response = await admin.post("/v1/programs/prg_nope/referrers",
                                json={"external_id": "x", "email": "x@example.com"})
    assert response.status_code == 404


async def test_patch_changes_only_what_is_sent(admin) -> None:
    program = (await admin.post("/v1/programs", json={
        **PROGRAM, "friend_reward": {"kind": "discount", "percent": 10}})).json()
    url = f"/v1/programs/{program['id']}"
    refused = await admin.patch(url, json={"name": None})
    assert refused.status_code == 422 and refused.json()["field"] == "name"
    cleared = await admin.patch(url, json={"friend_reward": None, "active": False})
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert (body["friend_reward"], body["active"], body["name"]) == (None, False, "Shop")
    assert body["referrer_reward"]["amount"] == 1000
    assert (await admin.patch("/v1/programs/prg_nope", json={"name": "x"})).status_code == 404


async def test_openapi_documents_auth_and_problems(admin) -> None:
    spec = (await admin.get("/openapi.json")).json()
    create = spec["paths"]["/v1/programs"]["post"]
    assert {"201", "401", "422"} <= set(create["responses"])
    assert create["security"] and "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "409" in spec["paths"]["/v1/rewards/{reward_id}/approve"]["post"]["responses"]


async def test_programmes_are_listed_with_an_active_filter(admin) -> None:
    first = (await admin.post("/v1/programs", json=PROGRAM)).json()
    second = (await admin.post("/v1/programs", json={**PROGRAM, "name": "Other"})).json()
    await admin.patch(f"/v1/programs/{second['id']}", json={"active": False})
    listed = await admin.get("/v1/programs")
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()] == [first["id"], second["id"]]
    assert all("secret_key" not in p for p in listed.json())
    active = (await admin.get("/v1/programs", params={"active": "true"})).json()
    assert [p["id"] for p in active] == [first["id"]]
    assert (await admin.get("/v1/programs", headers={"Authorization": ""})).status_code == 401
