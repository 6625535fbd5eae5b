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
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Output format [text].")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="info shows the traffic; warning only problems [info].",
)
@click.option("--metrics", help="Serve Prometheus metrics on HOST:PORT [off].")
def broker(config_file: str | None, **flags: Any) -> None:
    """Run the broker: it relays rooms and direct messages and shows the traffic."""
    cfg: BrokerConfig = _load(BrokerConfig, config_file, flags)
    import zmq

    from zchat.broker.server import BrokerServer, is_local
    from zchat.keys import KeyFileError
    from zchat.store import SQLiteStore, StoreError

    try:
        store = SQLiteStore(cfg.store)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    room = _open_files_for(cfg.max_clients)
    if room < cfg.max_clients:
        click.echo(
            f"warning: the open-file limit allows about {room} clients, not max_clients = "
            f"{cfg.max_clients}: raise it (ulimit -n, LimitNOFILE=) or lower max_clients",
            err=True,
        )
    try:
        server = BrokerServer(cfg, store)
    except zmq.ZMQError as exc:
        store.close()
        raise click.ClickException(f"cannot bind {cfg.bind} / {cfg.pub or 'auto'}: {exc}") from None
    except KeyFileError as exc:
        store.close()
        raise click.ClickException(str(exc)) from None
    security = "CURVE" if server.curve else "no encryption"
    if server.curve:
        keys = len(server.keyring)
        security += (
            ", any client key" if cfg.curve_open else f", {keys} client key{'s' * (keys != 1)}"
        )
    click.echo(
        f"zchat broker {__version__}: clients connect to {server.endpoint}, "
        f"broadcast on {server.pub_endpoint}, store {cfg.store} ({security})",
    )
    if not server.curve and not (is_local(server.endpoint) and is_local(server.pub_endpoint)):
        click.echo(
            "warning: listening beyond this host without CURVE: anyone who can reach these "
            "ports can read every room and post under any nick (see docs/security.md)",
            err=True,
        )
    metrics = None
    if cfg.metrics:
        from zchat.broker.metrics import MetricsError, serve

        try:
            metrics = serve(cfg.metrics, server.core, server.clock)
        except MetricsError as exc:
            server.close()
            store.close()
            raise click.ClickException(str(exc)) from None
        click.echo(f"metrics on http://{cfg.metrics}/metrics")
    sys.stdout.flush()
    try:
        server.run()
    finally:
        if metrics is not None:
            metrics.shutdown()
        server.close()
        store.close()
    if server.failure:
        raise click.ClickException(server.failure)
    click.echo("zchat broker stopped")


@main.command()
@_config_option
@click.option("--connect", help="Broker endpoint [tcp://127.0.0.1:5555].")
@click.option("--nick", help="Your nick [your login name].")
@click.option("--room", help="Room to join first [lobby].")
@click.option("--history", type=int, help="Messages of history shown on join [20].")
@click.option("--plain", is_flag=True, default=None, help="One line per event, no prompt.")
@click.option(
    "--bell/--no-bell", default=None, help="Ring the terminal bell on a mention or a DM [on]."
)
@click.option(
    "--json", "json_mode", is_flag=True, help="One JSON object per event (implies --plain)."
)
def client(config_file: str | None, json_mode: bool, **flags: Any) -> None:
    """Chat: type to talk in the current room, /help for commands, exit to leave."""
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    from zchat.client.app import run

    sys.exit(run(cfg, json_mode, _client_keys(cfg)))


def _open_files_for(clients: int) -> int:
    """Raise the soft open-file limit as far as needed (each client holds two
    connections); return how many clients the limit allows."""
    import resource

    spare = 64  # the store, the wake-up pipe, libzmq's own descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + spare
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return clients if soft == resource.RLIM_INFINITY else max(0, (soft - spare) // 2)


def _client_keys(cfg: ClientConfig) -> Any:
    """The CURVE keys the config names (None without CURVE); a ClickException if unusable."""
    from zchat.keys import ClientKeys, KeyFileError

    try:
        return ClientKeys.load(cfg.curve_key, cfg.curve_server_key)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None


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
        send_lines(cfg.connect, nick, cfg.room, texts, cfg.wait, _client_keys(cfg))
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
        reply = ask_stats(cfg.connect, cfg.wait, _client_keys(cfg))
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


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write the key files.",
)
def keygen(name: str, directory: str) -> None:
    """Create a CURVE key pair: NAME.key (public: share it) and NAME.key_secret (keep it).

    \b
    The broker's public key goes to every client (curve_server_key); each
    client's public key goes into the broker's curve_clients directory.
    """
    import os
    import re
    from pathlib import Path

    import zmq.auth

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise click.ClickException(f"key name {name!r}: use letters, digits, _ . - only")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise click.ClickException(f"{path} exists already; not overwriting a key")
    folder.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    key = zmq.auth.load_certificate(str(public))[0].decode()
    click.echo(f"public key {key}\n  {public} (share it)\n  {secret} (keep it secret)")


@main.group()
def config() -> None:
    """Inspect configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE and print the effective settings, starting nothing.

    Shows every key of each table in FILE with its value and where it came
    from: the file, a ZCHAT_* variable or the default. Key files named for
    CURVE are opened too. Exits 1 with one line naming file and key on the
    first problem.
    """
    from zchat.config import explain, sections

    try:
        tables = sections(file)
        if not tables:
            raise ConfigError(f"{file}: holds neither a [broker] nor a [client] table")
        for table in tables:
            cfg: BrokerConfig | ClientConfig
            if table == "broker":
                cfg, sources = explain(BrokerConfig, file)
            else:
                cfg, sources = explain(ClientConfig, file)
            _check_key_files(file, table, cfg)
            click.echo(f"[{table}]")
            for key, where in sources.items():
                shown = "file" if where.startswith(f"{file}:") else where
                click.echo(f"  {key:<21} = {getattr(cfg, key)!r:<40} ({shown})")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{file}: ok")


def _check_key_files(file: str, table: str, cfg: Any) -> None:
    from zchat.keys import ClientKeys, KeyFileError, load_secret

    try:
        if table == "broker" and cfg.curve_secret_key:
            from zchat.broker.auth import KeyRing

            load_secret(cfg.curve_secret_key)
            KeyRing(cfg.curve_clients or None, cfg.curve_open)
        elif table == "client":
            ClientKeys.load(cfg.curve_key, cfg.curve_server_key)
    except KeyFileError as exc:
        raise ConfigError(f"{file}: [{table}] {exc}") from None
