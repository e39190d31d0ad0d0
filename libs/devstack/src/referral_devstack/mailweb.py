"""A page to read caught mail, and the demo shop's landing page (where referral links lead)."""

from __future__ import annotations

import html
import json
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

_STYLE = ("<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;"
          "padding:0 1rem;color:#1d2330}table{border-collapse:collapse;width:100%}"
          "td,th{border-bottom:1px solid #dde;padding:.4rem;text-align:left}"
          "pre{background:#f4f5f8;padding:1rem;white-space:pre-wrap;overflow-wrap:anywhere}"
          "iframe{width:100%;height:32rem;border:1px solid #dde}</style>")


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang='en'><meta charset='utf-8'>"
                        f"<meta name='viewport' content='width=device-width'>"
                        f"<title>{html.escape(title)}</title>{_STYLE}<body>{body}</body></html>")


def create_mail_app(mail_dir: Path, demo_state: Path) -> FastAPI:
    app = FastAPI(title="Caught mail", docs_url=None, redoc_url=None)

    def _load(name: str) -> Any:
        path = mail_dir / name
        if "/" in name or not path.is_file():
            raise HTTPException(404, "no such message")
        return message_from_bytes(path.read_bytes(), policy=policy.default)

    # Plain functions: FastAPI runs them in its thread pool, so reading files is fine there.
    @app.get("/", response_class=HTMLResponse)
    def inbox() -> HTMLResponse:
        rows = []
        for path in sorted(mail_dir.glob("*.eml"), reverse=True)[:500]:
            msg = message_from_bytes(path.read_bytes(), policy=policy.default)
            rows.append(f"<tr><td>{html.escape(str(msg['Date'] or ''))}</td>"
                        f"<td>{html.escape(str(msg['To'] or ''))}</td>"
                        f"<td><a href='/mail/{path.name}'>{html.escape(str(msg['Subject']))}</a>"
                        f"</td></tr>")
        table = ("<table><tr><th>Date</th><th>To</th><th>Subject</th></tr>"
                 + "".join(rows) + "</table>") if rows else "<p>No mail yet.</p>"
        return _page("Caught mail", f"<h1>Caught mail</h1><p>Files: <code>{mail_dir}</code></p>"
                     + table)

    @app.get("/mail/{name}", response_class=HTMLResponse)
    async def show(name: str) -> HTMLResponse:
        msg = _load(name)
        text = msg.get_body(preferencelist=("plain",))
        rich = msg.get_body(preferencelist=("html",))
        headers = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>"
                          for k, v in msg.items())
        body = f"<p><a href='/'>← inbox</a></p><h1>{html.escape(str(msg['Subject']))}</h1>"
        body += f"<table>{headers}</table>"
        if rich is not None:
            body += f"<h2>HTML</h2><iframe sandbox srcdoc='{html.escape(rich.get_content())}'>"
            body += "</iframe>"
        if text is not None:
            body += f"<h2>Text</h2><pre>{html.escape(text.get_content())}</pre>"
        return _page(str(msg["Subject"]), body)

    @app.get("/landing", response_class=HTMLResponse)
    def landing(request: Request) -> HTMLResponse:
        ref = request.query_params.get("ref", "")
        rclid = request.query_params.get("rclid", "")
        state = json.loads(demo_state.read_text()) if demo_state.is_file() else {}
        body = "<h1>Demo shop</h1>"
        if not ref:
            return _page("Demo shop", body + "<p>No referral on this visit.</p>")
        body += (f"<p>Welcome! You were referred with code <b>{html.escape(ref)}</b>; "
                 f"click id <code>{html.escape(rclid)}</code>.</p>")
        if state.get("secret_key"):
            payload = json.dumps({"conversion_id": "order-REPLACE", "click_id": rclid,
                                  "customer": {"id": "friend-REPLACE",
                                               "email": "friend@example.com", "is_new": True},
                                  "amount": 4999, "currency": state.get("currency", "EUR")})
            curl = (f"curl -sS -X POST {state['tracker_url']}/v1/conversions "
                    f"-H 'Authorization: Bearer {state['secret_key']}' "
                    f"-H 'Content-Type: application/json' "
                    f"-d \"$(echo '{payload}' | sed \"s/REPLACE/$(date +%s)/g\")\"")
            body += ("<p>The checkout would now post this conversion (run it in a terminal):</p>"
                     f"<pre>{html.escape(curl)}</pre>"
                     "<p>Then watch <a href='/'>caught mail</a>.</p>")
        return _page("Demo shop", body)

    return app
