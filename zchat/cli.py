"""The ``zchat`` command: broker, client, send. Thin: flags -> Config -> run.

Heavy imports happen inside each command so ``zchat send`` starts fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from zchat import __version__
from zchat.config import BrokerConfig, ClientConfig, ConfigError, default_nick, load

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="ZCHAT_CONFIG",
    help="TOML config file (flags and ZCHAT_* variables override it).",
)


def _load(cls: Any, path: str | None, flags: dict[str, Any]) -> Any:
    try:
        return load(cls, path, flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zchat")
def main() -> None:
    """zchat: real-time chat rooms and direct messages over ZeroMQ.

    Start a broker, then connect clients to it:

    \b
      zchat broker
      zchat client --nick alice --room dev
    """


@main.command()
@_config_option
@click.option("--bind", help="Endpoint clients connect to [tcp://127.0.0.1:5555].")
@click.option("--pub", help="Broadcast endpoint to bind [same host, a free port].")
@click.option("--store", help="SQLite file for history [in the user data directory].")
@click.option("--quiet", is_flag=True, default=None, help="Do not show the traffic.")
@click.option("--heartbeat", type=float, help="Seconds between heartbeats [5].")
@click.option("--timeout", type=float, help="Seconds of silence before a client is gone [15].")
def broker(config_file: str | None, **flags: Any) -> None:
    """Run the broker: it relays rooms and direct messages and shows the traffic."""
    cfg: BrokerConfig = _load(BrokerConfig, config_file, flags)
    import zmq

    from zchat.broker.core import Limits
    from zchat.broker.server import BrokerServer
    from zchat.store import SQLiteStore, StoreError

    try:
        store = SQLiteStore(cfg.store)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        server = BrokerServer(
            store,
            cfg.bind,
            cfg.pub or None,
            heartbeat=cfg.heartbeat,
            timeout=cfg.timeout,
            limits=Limits(cfg.max_clients, cfg.max_rooms_per_client),
            hwm=cfg.hwm,
            quiet=cfg.quiet,
        )
    except zmq.ZMQError as exc:
        store.close()
        raise click.ClickException(f"cannot bind {cfg.bind} / {cfg.pub or 'auto'}: {exc}") from None
    click.echo(
        f"zchat broker {__version__}: clients connect to {server.endpoint}, "
        f"broadcast on {server.pub_endpoint}, store {cfg.store}",
    )
    sys.stdout.flush()
    try:
        server.run()
    finally:
        server.close()
        store.close()
    click.echo("zchat broker stopped")


@main.command()
@_config_option
@click.option("--connect", help="Broker endpoint [tcp://127.0.0.1:5555].")
@click.option("--nick", help="Your nick [your login name].")
@click.option("--room", help="Room to join first [lobby].")
@click.option("--history", type=int, help="Messages of history shown on join [20].")
@click.option("--plain", is_flag=True, default=None, help="One line per event, no prompt.")
@click.option(
    "--json", "json_mode", is_flag=True, help="One JSON object per event (implies --plain)."
)
def client(config_file: str | None, json_mode: bool, **flags: Any) -> None:
    """Chat: type to talk in the current room, /help for commands, exit to leave."""
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    from zchat.client.app import run

    sys.exit(run(cfg, json_mode))


@main.command()
@_config_option
@click.option("--connect", help="Broker endpoint [tcp://127.0.0.1:5555].")
@click.option("--nick", help="Nick to send as [your login name + '-send'].")
@click.option("--room", required=True, help="Room to say it in.")
@click.option("--timeout", "wait", type=float, help="Seconds to wait for the broker [10].")
@click.argument("text", required=False)
def send(config_file: str | None, text: str | None, **flags: Any) -> None:
    """Say TEXT (or each line of stdin) in a room and exit once it is stored."""
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    nick = cfg.nick
    if flags.get("nick") is None and nick == default_nick():
        nick = nick[:27] + "-send"  # so a script never collides with its user's client
    from zchat.client.oneshot import SendError
    from zchat.client.oneshot import send as send_lines

    texts = [text] if text is not None else [line.rstrip("\r\n") for line in sys.stdin]
    try:
        send_lines(cfg.connect, nick, cfg.room, texts, cfg.wait)
    except SendError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@_config_option
@click.option("--connect", help="Broker endpoint [tcp://127.0.0.1:5555].")
@click.option("--timeout", "wait", type=float, help="Seconds to wait for the broker [10].")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object instead of a table.")
def stats(config_file: str | None, json_mode: bool, **flags: Any) -> None:
    """Show a running broker's clients, rooms and traffic counters."""
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    from zchat.client.oneshot import SendError
    from zchat.client.oneshot import stats as ask_stats

    try:
        reply = ask_stats(cfg.connect, cfg.wait)
    except SendError as exc:
        raise click.ClickException(str(exc)) from None
    uptime = max(0.0, reply.time - reply.started)
    if json_mode:
        import json

        data = {"uptime": uptime, "clients": reply.clients, "rooms": reply.rooms}
        data.update({c.name: c.value for c in reply.counters})
        click.echo(json.dumps(data))
        return
    hours, rest = divmod(int(uptime), 3600)
    click.echo(
        f"broker at {cfg.connect}: up {hours}h{rest // 60:02d}m{rest % 60:02d}s, "
        f"{reply.clients} clients, {reply.rooms} rooms"
    )
    for c in reply.counters:
        click.echo(f"  {c.name:<11} {c.value}")
