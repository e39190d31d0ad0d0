"""`referral-dev`: run the local stack or one of its parts."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import typer

app = typer.Typer(help="Local stack of the referral platform (what `make up` runs).",
                  no_args_is_help=True)


@app.command()
def up(root: Path = typer.Option(Path.cwd(), help="Repository root (holds .data/).")) -> None:
    """Start everything in the foreground; Ctrl-C stops it all."""
    from .up import run

    raise typer.Exit(asyncio.run(run(root.resolve())))


@app.command()
def mailcatcher(
    port: int = typer.Option(1025, help="SMTP port."),
    web_port: int = typer.Option(8025, help="Port of the page listing caught mail."),
    directory: Path = typer.Option(Path(".data/mail"), "--dir", help="Where .eml files go."),
    demo_state: Path = typer.Option(Path(".data/demo.json"), help="Demo programme state."),
) -> None:
    """SMTP catcher: stores every message as an .eml file and lists them on a web page."""
    import uvicorn

    from .mailcatcher import MailCatcher
    from .mailweb import create_mail_app

    catcher = MailCatcher(port=port, directory=directory).start()
    print(f"SMTP on 127.0.0.1:{port}; mail in {directory}; page http://127.0.0.1:{web_port}",
          flush=True)
    try:
        uvicorn.run(create_mail_app(directory, demo_state), host="127.0.0.1", port=web_port,
                    log_level="warning")
    finally:
        catcher.stop()


@app.command()
def broker(port: int = typer.Option(9092), host: str = typer.Option("127.0.0.1")) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory storage) in the foreground."""
    from .broker import EmbeddedBroker

    instance = EmbeddedBroker(port, host).start()
    print(f"broker on {instance.bootstrap}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        instance.stop()


@app.command()
def topics(bootstrap: str = typer.Option("127.0.0.1:9092", envvar="KAFKA_BOOTSTRAP_SERVERS"),
           prefix: str = typer.Option("", envvar="TOPIC_PREFIX")) -> None:
    """Create every platform topic (and dead-letter topic) that does not exist yet."""
    from referral_events import TopicRegistry
    from referral_kit.kafka import ensure_topics

    created = asyncio.run(ensure_topics(bootstrap, TopicRegistry(prefix).all()))
    print(f"created {len(created)} topics: {', '.join(created) or '-'}")
