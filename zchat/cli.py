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


class _Commands(click.Group):
    """A group whose ``--help`` lists each command's first sentence whole, wrapped to the
    terminal (click cuts it at one line with ``...``)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--irc", help="Let IRC clients in on HOST:PORT [off].")
@click.option("--web", help="Serve the web chat page on HOST:PORT [off].")
@click.option("--cluster", help="Share rooms with other brokers via redis://HOST:PORT/DB [off].")
def broker(config_file: str | None, **flags: Any) -> None:
    """Run the broker: it relays rooms and direct messages and shows the traffic."""
    import dataclasses

    from zchat.config import explain

    try:
        cfg, sources = explain(BrokerConfig, config_file, flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    import zmq

    from zchat.broker.registry import Registry
    from zchat.broker.server import BrokerServer, is_local
    from zchat.cluster import describe, open_cluster
    from zchat.cluster.feed import Feed
    from zchat.keys import KeyFileError
    from zchat.store import SQLiteStore, Store, StoreError

    store: Store
    registry: Registry | None = None
    feed: Feed | None = None
    try:
        if cfg.cluster:  # the store, the registry and the feed all on one Redis
            cluster = open_cluster(cfg.cluster)
            store, registry, feed = cluster.store, cluster.registry, cluster.feed
        else:
            store = SQLiteStore(cfg.store)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    room = _open_files_for(cfg.max_clients)
    if room < cfg.max_clients:
        if sources["max_clients"] != "default":
            click.echo(
                f"warning: the open-file limit allows about {room} clients, not max_clients = "
                f"{cfg.max_clients}: raise it (ulimit -n, LimitNOFILE=) or lower max_clients",
                err=True,
            )
        # Past the limit a client would cost the broker failed accepts; refusing
        # it with "full" is the honest answer (docs/deploy.md).
        cfg = dataclasses.replace(cfg, max_clients=room)
    from zchat.broker.doors import DoorError, open_doors

    try:
        doors = open_doors(cfg)
    except DoorError as exc:
        store.close()
        raise click.ClickException(str(exc)) from None
    try:
        server = BrokerServer(cfg, store, doors=doors, registry=registry, feed=feed)
    except zmq.ZMQError as exc:
        for door in doors:
            door.close()
        store.close()
        raise click.ClickException(f"cannot bind {cfg.bind} / {cfg.pub or 'auto'}: {exc}") from None
    except KeyFileError as exc:
        for door in doors:
            door.close()
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
        f"broadcast on {server.pub_endpoint}, "
        f"{describe(cfg.cluster) if cfg.cluster else 'store ' + cfg.store} ({security})",
    )
    for door in doors:
        click.echo(door.describe())
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
@click.option(
    "--connect",
    help="Broker endpoint; several comma-separated: the next one when a broker is lost "
    "[tcp://127.0.0.1:5555].",
)
@click.option("--nick", help="Your nick [your login name].")
@click.option(
    "--room",
    help="Room to join first [lobby; piped input that starts with /join joins only that].",
)
@click.option("--history", type=int, help="Messages of history shown on join [20].")
@click.option("--plain", is_flag=True, default=None, help="One line per event, no prompt.")
@click.option(
    "--bell/--no-bell", default=None, help="Ring the terminal bell on a mention or a DM [on]."
)
@click.option(
    "--json", "json_mode", is_flag=True, help="One JSON object per event (implies --plain)."
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False),
    help="Also write each room and DM conversation to DIR/ROOM.log, DIR/@NICK.log.",
)
def client(config_file: str | None, json_mode: bool, log_dir: str | None, **flags: Any) -> None:
    """Chat: type to talk in the current room, /help for commands, exit to leave."""
    from zchat.config import explain

    try:
        cfg, sources = explain(ClientConfig, config_file, flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _client_keys(cfg)  # a missing or unreadable key file stops here, named
    from zchat.client.app import run

    explicit = sources["room"] != "default"
    sys.exit(run(cfg, json_mode, explicit_room=explicit, log_dir=log_dir))


def _toml(value: object) -> str:
    """A setting as it would be written in the TOML file: "text", true, ["a", "b"]."""
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)


def _open_files_for(clients: int) -> int:
    """Raise the soft open-file limit as far as needed (each client holds two
    connections); return how many clients the limit allows."""
    import resource

    spare = 64  # the store, the wake-up pipe, libzmq's own descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + spare
    if hard != resource.RLIM_INFINITY and hard < wanted:
        # As root the hard limit may be raised too, up to the kernel's fs.nr_open.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                ceiling = int(f.read())
            hard = min(wanted, ceiling)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (OSError, ValueError):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
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


#: Exit code when the broker refuses this client's CURVE setup (as ``zchat client``).
AUTH_FAILED = 3


class _AuthFailed(click.ClickException):
    exit_code = AUTH_FAILED


def _chat_error(exc: Exception) -> click.ClickException:
    """A ChatError as the one line a command stops with (exit 3 for authentication)."""
    from zchat.client.api import AuthFailed

    if isinstance(exc, AuthFailed):
        return _AuthFailed(f"authentication failed: {exc.text}")
    return click.ClickException(getattr(exc, "text", str(exc)))


@main.command()
@_config_option
@click.option(
    "--connect",
    help="Broker endpoint; several comma-separated: tried in order [tcp://127.0.0.1:5555].",
)
@click.option("--nick", help="Nick to send as [your login name + '-send'].")
@click.option("--room", required=True, help="Room to say it in.")
@click.option("--timeout", "wait", type=float, help="Seconds to wait for the broker [10].")
@click.argument("text", required=False)
def send(config_file: str | None, text: str | None, **flags: Any) -> None:
    """Say TEXT (or each line of stdin) in a room and exit once it is stored.

    A line the rules refuse is skipped and the rest sent; the command then
    exits 1 naming the first one. Exits 3 when the broker refuses the keys.
    """
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    nick = cfg.nick
    if flags.get("nick") is None and nick == default_nick():
        nick = nick[:27] + "-send"  # so a script never collides with its user's client
    _client_keys(cfg)
    import asyncio

    from zchat.client.api import ChatError, send_lines

    texts = [text] if text is not None else [line.rstrip("\r\n") for line in sys.stdin]
    try:
        report = asyncio.run(
            send_lines(cfg.connect, nick, cfg.room, texts, curve_key=cfg.curve_key or None,
                       curve_server_key=cfg.curve_server_key or None, timeout=cfg.wait)
        )  # fmt: skip
    except ChatError as exc:
        raise _chat_error(exc) from None
    if report.refused:
        number, error = report.refused[0]
        raise click.ClickException(
            f"{len(report.refused)} not sent (line {number}: {error.text}); "
            f"{len(report.seqs)} sent"
        )


@main.command()
@_config_option
@click.option(
    "--connect",
    help="Broker endpoint; several comma-separated: tried in order [tcp://127.0.0.1:5555].",
)
@click.option("--timeout", "wait", type=float, help="Seconds to wait for the broker [10].")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object instead of a table.")
def stats(config_file: str | None, json_mode: bool, **flags: Any) -> None:
    """Show a running broker's clients, rooms and traffic counters."""
    cfg: ClientConfig = _load(ClientConfig, config_file, flags)
    _client_keys(cfg)
    from zchat.client.api import ChatError
    from zchat.client.api import stats as ask_stats

    try:
        reply = ask_stats(
            cfg.connect,
            curve_key=cfg.curve_key or None,
            curve_server_key=cfg.curve_server_key or None,
            timeout=cfg.wait,
        )
    except ChatError as exc:
        raise _chat_error(exc) from None
    uptime = reply.uptime
    if json_mode:
        import json

        data: dict[str, float | int] = {
            "uptime": round(uptime, 1),
            "clients": reply.clients,
            "rooms": reply.rooms,
        }
        data.update(reply.counters)
        click.echo(json.dumps(data))
        return
    hours, rest = divmod(int(uptime), 3600)
    click.echo(
        f"broker at {reply.endpoint or cfg.connect}: up {hours}h{rest // 60:02d}m{rest % 60:02d}s, "
        f"{reply.clients} clients, {reply.rooms} rooms"
    )
    for name, value in reply.counters.items():
        click.echo(f"  {name:<11} {value}")


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


@main.command()
@_config_option
@click.argument("name")
@click.option("--accounts", help="Accounts file [the broker config's accounts].")
@click.option(
    "--cert", "cert", help="Also log in with this client certificate (PEM file) (SASL EXTERNAL)."
)
@click.option("--no-password", is_flag=True, help="Certificate only: set or keep no password.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not a prompt.")
@click.option("--delete", is_flag=True, help="Remove the account.")
def passwd(
    config_file: str | None,
    name: str,
    accounts: str | None,
    cert: str | None,
    no_password: bool,
    password_stdin: bool,
    delete: bool,
) -> None:
    """Set NAME's password in the accounts file: IRC (SASL) and web logins (docs/irc.md).

    \b
    An account owns the nick NAME as a CURVE key does: with an allow-list
    broker only NAME, logged in, may use it. --cert adds a TLS client
    certificate fingerprint (SASL EXTERNAL); the file is re-read by a running
    broker at the next login.
    """
    import os

    from zchat.accounts import Accounts, AccountsError

    path = accounts or _load(BrokerConfig, config_file, {}).accounts
    if not path:
        raise click.ClickException("no accounts file: give --accounts FILE or set accounts")
    try:
        book = Accounts.load(path, missing_ok=True)
        if delete:
            if not book.remove(name):
                raise click.ClickException(f"no account {name} in {path}")
            book.save()
            click.echo(f"account {name} removed from {path}")
            return
        password: str | None = None
        if not no_password:
            if password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = click.prompt(
                    f"password for {name}", hide_input=True, confirmation_prompt=True
                )
        elif book.get(name) is None and not cert:
            raise click.ClickException("--no-password needs --cert for a new account")
        der = b""
        if cert and os.path.exists(cert):
            import ssl

            try:
                with open(cert, encoding="ascii") as f:
                    der = ssl.PEM_cert_to_DER_cert(f.read())
            except (ValueError, OSError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"{cert}: not a PEM certificate ({exc})") from None
        book.set(name, password, add_fingerprint="" if der else cert or "", add_cert=der)
        book.save()
    except (ValueError, AccountsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"account {name} saved in {path}")


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
                click.echo(f"  {key:<21} = {_toml(getattr(cfg, key)):<40} # {shown}")
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
