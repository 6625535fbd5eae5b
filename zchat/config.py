"""One typed config object per command, built at the edge.

Precedence, lowest first: defaults < TOML file (``--config``) < ``ZCHAT_*``
environment < command-line flags. A broker file holds a ``[broker]`` table, a
client file a ``[client]`` table (one file may hold both). Unknown keys and bad
values raise ConfigError with one line naming where the value came from.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from zchat.protocol import ProtocolError
from zchat.protocol.rules import check_nick, normalize_room

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
ENV_PREFIX = "ZCHAT_"

_ENDPOINT_RE = re.compile(
    r"(tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.*-]+):([0-9]+|\*)|ipc://.+|inproc://.+)\Z"
)


class ConfigError(Exception):
    """A config value is wrong; str() is the one line to show the user."""


def _endpoint(value: str) -> str:
    match = _ENDPOINT_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a ZeroMQ endpoint like tcp://host:5555")
    port = match.group(3)
    if port and port != "*" and not 0 < int(port) < 65536:
        raise ValueError(f"port {port} out of range 1-65535")
    return value


def _redis_url(value: str) -> str:
    scheme = value.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix") or "://" not in value:
        raise ValueError(f"{value!r} is not a Redis URL (redis://host:port/db)")
    return value


def _endpoints(value: str) -> str:
    """Several endpoints, comma-separated (a client's brokers, tried in order)."""
    parts = re.split(r"\s*,\s*", value)
    for n, part in enumerate(parts, start=1):
        try:
            _endpoint(part)
        except ValueError as exc:
            if len(parts) == 1:
                raise
            raise ValueError(f"endpoint {n} of {len(parts)}: {exc}") from None
    return ",".join(parts)


def _optional_endpoint(value: str) -> str:
    return value and _endpoint(value)


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"expected host:port, like 127.0.0.1:9464, got {value!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} out of range 1-65535")
    return value


def _positive(value: float) -> float:
    if not 0 < value < math.inf:  # also refuses NaN
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _count(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _history(value: int) -> int:
    if not 0 <= value <= 500:
        raise ValueError(f"must be between 0 and 500, got {value}")
    return value


def _protocol_check(check: Callable[[str], str]) -> Callable[[str], str]:
    def wrapped(value: str) -> str:
        try:
            return check(value)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None

    return wrapped


def default_store() -> str:
    return str(Path(platformdirs.user_data_dir("zchat")) / "broker.sqlite3")


def default_nick() -> str:
    """The login name, made into a valid nick (``j.doe`` stays, ``Jöns`` becomes ``J_ns``)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "guest"
    nick = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip(".-")[:32]
    return nick or "guest"


@dataclass(frozen=True)
class BrokerConfig:
    """Everything ``zchat broker`` needs. configs/loopback.toml lists every key."""

    bind: str = DEFAULT_ENDPOINT
    pub: str = ""  # empty: same host as bind, a port the OS picks
    store: str = dataclasses.field(default_factory=default_store)
    quiet: bool = False
    heartbeat: float = 5.0
    timeout: float = 15.0
    max_clients: int = 10_000
    max_rooms_per_client: int = 100
    announce_limit: int = 200  # rooms with this many members announce no joins and leaves
    max_topics: int = 0  # topics subscribed at once before a flood is assumed; 0: 2 per client
    hwm: int = 100_000  # broadcasts queued per subscriber before drops (clients gap-fill)
    rate: float = 50.0  # requests per second per client, sustained (token bucket)
    burst: int = 200  # requests a client may send at once before the rate applies
    admins: tuple[str, ...] = ()  # nicks that are operators of every room
    # CURVE (docs/security.md): the broker's secret key file turns encryption on.
    curve_secret_key: str = ""
    curve_clients: str = ""  # directory of allowed client public keys (re-read on change)
    curve_open: bool = False  # accept any client key: encrypted, not authenticated
    log_format: str = "text"  # text or json
    log_level: str = "info"  # debug, info (the traffic), warning, error
    metrics: str = ""  # host:port for a Prometheus /metrics endpoint; "" for none
    # Doors (docs/irc.md, docs/web.md): IRC clients and browsers as broker sessions.
    irc: str = ""  # host:port for IRC clients; "" for none
    irc_tls_cert: str = ""  # PEM certificate chain: the IRC door speaks TLS
    irc_tls_key: str = ""
    web: str = ""  # host:port for the web page and its WebSocket; "" for none
    web_tls_cert: str = ""  # PEM certificate chain: the web door speaks HTTPS
    web_tls_key: str = ""
    accounts: str = ""  # password file (zchat passwd) for IRC and web logins
    # A cluster (docs/deploy.md): brokers sharing rooms through one Redis; the
    # store then lives there, not in `store`.
    cluster: str = ""  # redis://[:password@]host:port/db; "" for a single broker


@dataclass(frozen=True)
class ClientConfig:
    """Everything ``zchat client`` and ``zchat send`` need."""

    #: One broker endpoint, or several comma-separated (a TOML file may give a
    #: list): the client connects to the first and fails over to the next.
    connect: str = DEFAULT_ENDPOINT
    nick: str = dataclasses.field(default_factory=default_nick)
    room: str = "lobby"
    history: int = 20
    plain: bool = False
    wait: float = 10.0  # seconds to wait for acks at the end of piped input
    bell: bool = True  # ring the terminal bell on a mention or an incoming DM (interactive UI)
    curve_key: str = ""  # this client's secret key file (zchat keygen)
    curve_server_key: str = ""  # the broker's public key file, or the key itself


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "bind": _endpoint,
    "pub": _optional_endpoint,
    "connect": _endpoints,
    "heartbeat": _positive,
    "timeout": _positive,
    "wait": _positive,
    "max_clients": _count,
    "max_rooms_per_client": _count,
    "announce_limit": _count,
    "max_topics": lambda v: v and _count(v),
    "hwm": _count,
    "rate": _positive,
    "log_format": lambda v: _one_of(v, ("text", "json")),
    "log_level": lambda v: _one_of(v, ("debug", "info", "warning", "error")),
    "metrics": lambda v: v and _host_port(v),
    "irc": lambda v: v and _host_port(v),
    "web": lambda v: v and _host_port(v),
    "cluster": lambda v: v and _redis_url(v),
    "burst": _count,
    "admins": lambda nicks: tuple(_protocol_check(check_nick)(n) for n in nicks),
    "history": _history,
    "nick": _protocol_check(check_nick),
    "room": _protocol_check(normalize_room),
}

#: str keys a TOML file may also give as a list of strings, joined with commas.
_JOINED = frozenset({"connect"})

C = TypeVar("C", BrokerConfig, ClientConfig)
_KINDS: dict[str, type] = {
    "str": str,
    "bool": bool,
    "int": int,
    "float": float,
    "tuple[str, ...]": tuple,
}


def _coerce(kind: type, value: Any, from_text: bool) -> Any:
    """Bring ``value`` to ``kind``; env values arrive as text and are parsed."""
    if from_text and isinstance(value, str):
        if kind is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
    if kind is tuple:
        if from_text and isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if type(value) is list and all(type(v) is str for v in value):
            return tuple(value)
        raise ValueError(f"expected a list of strings, got {value!r}")
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise ValueError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _joined(values: list[Any]) -> str:
    if not values or not all(type(v) is str for v in values):
        raise ValueError(f"expected a string or a non-empty list of strings, got {values!r}")
    return ",".join(values)


def load(
    cls: type[C],
    path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> C:
    """Build ``cls`` from defaults, the file at ``path``, the environment and ``flags``.

    ``flags`` values of None mean "not given". Raises ConfigError.
    """
    return explain(cls, path, flags, env)[0]


def explain(
    cls: type[C],
    path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[C, dict[str, str]]:
    """Like load(), and also where each setting came from (for ``zchat config check``)."""
    section = "broker" if cls is BrokerConfig else "client"
    kinds = {f.name: _KINDS[str(f.type)] for f in dataclasses.fields(cls)}
    given: dict[str, tuple[Any, str, bool]] = {}  # key -> (value, where, is_text)

    if path is not None:
        table = _read_table(Path(path), section)
        for key, value in table.items():
            if key not in kinds:
                known = ", ".join(sorted(kinds))
                raise ConfigError(f"{path}: [{section}] unknown key {key!r} (known: {known})")
            given[key] = (value, f"{path}: [{section}] {key}", False)
    environ = os.environ if env is None else env
    for key in kinds:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            given[key] = (environ[name], f"environment {name}", True)
    for key, value in (flags or {}).items():
        if value is not None:
            given[key] = (value, f"--{key.replace('_', '-')}", False)

    values: dict[str, Any] = {}
    for key, (value, where, is_text) in given.items():
        try:
            if key in _JOINED and type(value) is list:
                value = _joined(value)
            value = _coerce(kinds[key], value, is_text)
            check = _CHECKS.get(key)
            values[key] = check(value) if check else value
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    sources = {key: given[key][1] if key in given else "default" for key in kinds}
    return cls(**values), sources


def sections(path: str | Path) -> list[str]:
    """The tables a config file holds, of ``broker`` and ``client``."""
    return [name for name in ("broker", "client") if name in _read_all(Path(path))]


def _read_table(path: Path, section: str) -> dict[str, Any]:
    table = _read_all(path).get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {section} must be a table, [{section}]")
    return table


def _read_all(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    for key in data:
        if key not in ("broker", "client"):
            raise ConfigError(
                f"{path}: unknown table or key {key!r} (expected [broker] or [client])"
            )
    return data
