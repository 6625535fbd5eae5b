"""zchat.config.load: defaults < TOML file < ZCHAT_* environment < flags.

Every error is a ConfigError whose str() is one line saying where the bad
value came from. The environment is always passed explicitly, never read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zchat.config import (
    DEFAULT_ENDPOINT,
    BrokerConfig,
    ClientConfig,
    ConfigError,
    default_nick,
    load,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str, name: str = "zchat.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args: object, **kwargs: object) -> str:
    """Load, expect a ConfigError, return its one-line message."""
    with pytest.raises(ConfigError) as info:
        load(*args, **kwargs)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text
    assert text
    return text


# ------------------------------------------------------------------ defaults


def test_broker_defaults() -> None:
    cfg = load(BrokerConfig, env={})
    assert cfg.bind == DEFAULT_ENDPOINT
    assert cfg.pub == ""
    assert cfg.store.endswith("broker.sqlite3")
    assert cfg.quiet is False
    assert (cfg.heartbeat, cfg.timeout) == (5.0, 15.0)
    assert (cfg.max_clients, cfg.max_rooms_per_client) == (10_000, 100)


def test_client_defaults() -> None:
    cfg = load(ClientConfig, env={})
    assert cfg.connect == DEFAULT_ENDPOINT
    assert cfg.nick == default_nick()
    assert (cfg.room, cfg.history, cfg.plain, cfg.wait) == ("lobby", 20, False, 10.0)


def test_default_nick_is_a_valid_nick() -> None:
    cfg = load(ClientConfig, flags={"nick": default_nick()}, env={})
    assert cfg.nick == default_nick()


# ---------------------------------------------------------------- precedence


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nheartbeat = 2\nquiet = true\nbind = "tcp://*:6000"\n')
    cfg = load(BrokerConfig, path, env={})
    assert cfg.heartbeat == 2.0
    assert isinstance(cfg.heartbeat, float)
    assert cfg.quiet is True
    assert cfg.bind == "tcp://*:6000"
    assert cfg.timeout == 15.0  # untouched


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nheartbeat = 2.0\ntimeout = 9.0\n")
    cfg = load(BrokerConfig, path, env={"ZCHAT_HEARTBEAT": "3.5", "ZCHAT_QUIET": "yes"})
    assert cfg.heartbeat == 3.5
    assert cfg.timeout == 9.0
    assert cfg.quiet is True


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[client]\nnick = "filenick"\nhistory = 5\nroom = "fileroom"\n')
    env = {"ZCHAT_NICK": "envnick", "ZCHAT_HISTORY": "6"}
    cfg = load(ClientConfig, path, flags={"nick": "flagnick", "history": None}, env=env)
    assert cfg.nick == "flagnick"
    assert cfg.history == 6  # flag None: not given, env wins
    assert cfg.room == "fileroom"


def test_all_four_levels_for_one_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nwait = 2.0\n")
    env = {"ZCHAT_WAIT": "3"}
    assert load(ClientConfig, env={}).wait == 10.0
    assert load(ClientConfig, path, env={}).wait == 2.0
    assert load(ClientConfig, path, env=env).wait == 3.0
    assert load(ClientConfig, path, flags={"wait": 4}, env=env).wait == 4.0


def test_env_of_the_other_command_is_ignored() -> None:
    cfg = load(ClientConfig, env={"ZCHAT_BIND": "not an endpoint", "ZCHAT_QUIET": "maybe"})
    assert cfg.connect == DEFAULT_ENDPOINT


def test_env_variables_outside_the_prefix_are_ignored() -> None:
    cfg = load(ClientConfig, env={"NICK": "x", "zchat_nick": "y", "ZCHAT_NICKNAME": "z"})
    assert cfg.nick == default_nick()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("1", True), ("true", True), ("YES", True), (" on ", True)],
        *[("0", False), ("false", False), ("No", False), ("off", False), ("", False)],
    ],
)
def test_env_booleans(text: str, expected: bool) -> None:
    assert load(BrokerConfig, env={"ZCHAT_QUIET": text}).quiet is expected


def test_env_numbers() -> None:
    cfg = load(BrokerConfig, env={"ZCHAT_MAX_CLIENTS": "42", "ZCHAT_TIMEOUT": "2.5"})
    assert (cfg.max_clients, cfg.timeout) == (42, 2.5)


def test_flag_int_for_a_float_becomes_float() -> None:
    cfg = load(BrokerConfig, flags={"heartbeat": 2}, env={})
    assert cfg.heartbeat == 2.0
    assert isinstance(cfg.heartbeat, float)


def test_empty_pub_means_automatic() -> None:
    assert load(BrokerConfig, flags={"pub": ""}, env={}).pub == ""


# --------------------------------------------------------------- file errors


def test_unknown_key_in_file_names_file_table_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[client]\nnick = "ann"\ncolour = "red"\n')
    text = error_of(ClientConfig, path, env={})
    assert str(path) in text
    assert "[client]" in text
    assert "colour" in text


def test_key_of_the_other_table_is_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nheartbeat = 1.0\n")
    text = error_of(ClientConfig, path, env={})
    assert "heartbeat" in text
    assert "[client]" in text


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('heartbeat = "x"', "heartbeat"),
        ("quiet = 1", "quiet"),
        ('quiet = "true"', "quiet"),
        ("heartbeat = true", "heartbeat"),
        ("max_clients = 1.5", "max_clients"),
        ("max_clients = true", "max_clients"),
        ("bind = 5555", "bind"),
        ("store = []", "store"),
        ("timeout = {a = 1}", "timeout"),
    ],
)
def test_wrong_type_in_file_names_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    path = write(tmp_path, f"[broker]\n{body}\n")
    text = error_of(BrokerConfig, path, env={})
    assert str(path) in text
    assert key in text


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    text = error_of(ClientConfig, path, env={})
    assert str(path) in text


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    text = error_of(ClientConfig, tmp_path, env={})
    assert str(tmp_path) in text


@pytest.mark.parametrize(
    "body",
    [
        "[client\nnick = 1\n",
        "[client]\nnick = \n",
        '[client]\nnick = "a"\nnick = "b"\n',
        '[client]\nnick = """\nunterminated\n',
        "[client]\n= 3\n",
    ],
)
def test_invalid_toml_is_one_line(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, body)
    text = error_of(ClientConfig, path, env={})
    assert str(path) in text


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """BUG: tomllib raises UnicodeDecodeError (not TOMLDecodeError) on bytes
    that are not UTF-8, and _read_table lets it escape as a traceback."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[client]\nnick = "J\xf6ns"\n'.encode("latin-1"))
    text = error_of(ClientConfig, path, env={})
    assert str(path) in text


@pytest.mark.parametrize(
    "body",
    [
        "[server]\nport = 1\n",
        'nick = "toplevel"\n',
        "[clients]\n",
    ],
)
def test_unknown_top_level_table_or_key(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, body)
    text = error_of(ClientConfig, path, env={})
    assert str(path) in text


def test_table_name_used_as_a_plain_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'client = "oops"\n')
    text = error_of(ClientConfig, path, env={})
    assert "client" in text


def test_one_file_for_both_commands(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[broker]\nbind = "tcp://*:7100"\nheartbeat = 1.5\n\n'
        '[client]\nconnect = "tcp://chat.example.org:7100"\nnick = "ann"\n',
    )
    broker = load(BrokerConfig, path, env={})
    client = load(ClientConfig, path, env={})
    assert (broker.bind, broker.heartbeat) == ("tcp://*:7100", 1.5)
    assert (client.connect, client.nick) == ("tcp://chat.example.org:7100", "ann")


def test_file_with_only_the_other_table_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\nheartbeat = 1.0\n")
    assert load(ClientConfig, path, env={}).history == 20


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load(BrokerConfig, path, env={}).heartbeat == 5.0


# ---------------------------------------------------------------- env errors


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [
        (BrokerConfig, "ZCHAT_HEARTBEAT", "abc"),
        (BrokerConfig, "ZCHAT_QUIET", "maybe"),
        (BrokerConfig, "ZCHAT_MAX_CLIENTS", "1.5"),
        (BrokerConfig, "ZCHAT_MAX_CLIENTS", "0"),
        (BrokerConfig, "ZCHAT_TIMEOUT", "-1"),
        (BrokerConfig, "ZCHAT_BIND", "localhost:5555"),
        (ClientConfig, "ZCHAT_HISTORY", "lots"),
        (ClientConfig, "ZCHAT_HISTORY", "501"),
        (ClientConfig, "ZCHAT_NICK", "bad nick"),
        (ClientConfig, "ZCHAT_ROOM", "no spaces"),
        (ClientConfig, "ZCHAT_WAIT", ""),
        (ClientConfig, "ZCHAT_PLAIN", "2"),
    ],
)
def test_bad_env_value_names_the_variable(cls: type, name: str, value: str) -> None:
    text = error_of(cls, env={name: value})
    assert name in text


def test_env_error_with_a_newline_in_the_value_stays_one_line() -> None:
    text = error_of(ClientConfig, env={"ZCHAT_NICK": "evil\nnick"})
    assert "ZCHAT_NICK" in text


def test_bad_flag_names_the_flag() -> None:
    text = error_of(BrokerConfig, flags={"max_rooms_per_client": 0}, env={})
    assert "--max-rooms-per-client" in text


# -------------------------------------------------------------- value checks


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5555",
        "tcp://chat.example.org:1",
        "tcp://*:65535",
        "tcp://[::1]:5555",
        "ipc:///tmp/zchat.sock",
        "inproc://zchat",
    ],
)
def test_good_endpoints(endpoint: str) -> None:
    assert load(ClientConfig, flags={"connect": endpoint}, env={}).connect == endpoint
    assert load(BrokerConfig, flags={"bind": endpoint}, env={}).bind == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "localhost:5555",
        "tcp://host:99999",
        "tcp://host:65536",
        "tcp://host:0",
        "tcp://host",
        "tcp://:5555",
        "http://host:80",
        "tcp://host:5555/path",
        "tcp://ho st:5555",
        " tcp://host:5555",
        "tcp://host:5555\n",
        "",
    ],
)
def test_bad_endpoints_are_rejected(endpoint: str) -> None:
    text = error_of(ClientConfig, flags={"connect": endpoint}, env={})
    assert "--connect" in text


def test_bad_endpoint_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\npub = "tcp://host:99999"\n')
    text = error_of(BrokerConfig, path, env={})
    assert str(path) in text
    assert "pub" in text


def test_several_endpoints_comma_separated_from_flag_and_environment() -> None:
    """Issue 13: a client's brokers, tried in order; spaces after commas are fine."""
    two = "tcp://a.example:5555,tcp://b.example:5555"
    assert load(ClientConfig, flags={"connect": two}, env={}).connect == two
    spaced = "tcp://a.example:5555, tcp://b.example:5555"
    assert load(ClientConfig, env={"ZCHAT_CONNECT": spaced}).connect == two


def test_several_endpoints_as_a_toml_list_or_string(tmp_path: Path) -> None:
    listed = write(tmp_path, '[client]\nconnect = ["tcp://a:1", "tcp://b:2"]\n', "l.toml")
    assert load(ClientConfig, listed, env={}).connect == "tcp://a:1,tcp://b:2"
    joined = write(tmp_path, '[client]\nconnect = "tcp://a:1,tcp://b:2"\n', "s.toml")
    assert load(ClientConfig, joined, env={}).connect == "tcp://a:1,tcp://b:2"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('["tcp://a:1", "tcp://b"]', "endpoint 2 of 2: 'tcp://b' is not a ZeroMQ endpoint"),
        ('"tcp://a:1,,tcp://b:2"', "endpoint 2 of 3: '' is not a ZeroMQ endpoint"),
        ('"tcp://a:1,"', "endpoint 2 of 2: '' is not"),
        ('["tcp://a:1", 5]', "expected a string or a non-empty list of strings"),
        ("[]", "expected a string or a non-empty list of strings"),
    ],
)
def test_a_bad_endpoint_in_a_list_names_file_key_and_which(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = write(tmp_path, f"[client]\nconnect = {value}\n")
    text = error_of(ClientConfig, path, env={})
    assert text.startswith(f"{path}: [client] connect: ")
    assert problem in text


def test_only_connect_takes_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, '[broker]\nbind = ["tcp://a:1", "tcp://b:2"]\n')
    assert "expected str, got list" in error_of(BrokerConfig, path, env={})


def test_a_bad_endpoint_in_the_environment_list_names_the_variable() -> None:
    text = error_of(ClientConfig, env={"ZCHAT_CONNECT": "tcp://a:1,tcp://b:99999"})
    assert text == "environment ZCHAT_CONNECT: endpoint 2 of 2: port 99999 out of range 1-65535"


def test_port_in_non_ascii_digits_is_rejected() -> None:
    """BUG: the port pattern is ``\\d+``, which matches any Unicode digit, and
    int() accepts them, so 'tcp://host:５５５５' (fullwidth) passes validation
    and only fails later inside ZeroMQ."""
    error_of(ClientConfig, flags={"connect": "tcp://host:\uff15\uff15\uff15\uff15"}, env={})


@pytest.mark.parametrize("nick", ["", "-dash", ".dot", "has space", "b@d", "x" * 33, "é"])
def test_invalid_nick_is_rejected(nick: str) -> None:
    assert "--nick" in error_of(ClientConfig, flags={"nick": nick}, env={})


@pytest.mark.parametrize("room", ["", "#", "no spaces", "bad!", "x" * 65, "#-dash"])
def test_invalid_room_is_rejected(room: str) -> None:
    assert "--room" in error_of(ClientConfig, flags={"room": room}, env={})


def test_room_is_normalised(tmp_path: Path) -> None:
    assert load(ClientConfig, flags={"room": "#Dev"}, env={}).room == "dev"
    assert load(ClientConfig, env={"ZCHAT_ROOM": "#Ops"}).room == "ops"
    path = write(tmp_path, '[client]\nroom = "#Dev"\n')
    assert load(ClientConfig, path, env={}).room == "dev"


@pytest.mark.parametrize(
    ("key", "value"),
    [("heartbeat", 0.0), ("heartbeat", -1.0), ("timeout", 0), ("max_clients", 0)],
)
def test_non_positive_numbers_are_rejected(key: str, value: float) -> None:
    assert f"--{key.replace('_', '-')}" in error_of(BrokerConfig, flags={key: value}, env={})


@pytest.mark.parametrize("history", [-1, 501])
def test_history_out_of_range(history: int) -> None:
    error_of(ClientConfig, flags={"history": history}, env={})


@pytest.mark.parametrize("history", [0, 500])
def test_history_bounds_are_allowed(history: int) -> None:
    assert load(ClientConfig, flags={"history": history}, env={}).history == history


@pytest.mark.parametrize(
    ("source", "key"),
    [("env", "ZCHAT_HEARTBEAT"), ("env", "ZCHAT_TIMEOUT"), ("file", "heartbeat")],
)
def test_nan_interval_is_rejected(tmp_path: Path, source: str, key: str) -> None:
    """BUG: ``_positive`` tests ``value <= 0``, which is False for NaN, so
    ZCHAT_HEARTBEAT=nan (or ``heartbeat = nan`` in TOML) is accepted: the
    broker then sends one BEAT and never another (``now >= nan`` is False),
    and its poll loop spins at 1 ms (``max(0.0, nan)`` is 0.0)."""
    if source == "env":
        text = error_of(BrokerConfig, env={key: "nan"})
    else:
        path = write(tmp_path, f"[broker]\n{key} = nan\n")
        text = error_of(BrokerConfig, path, env={})
    assert key in text


# ------------------------------------------------------------ shipped files

SHIPPED = sorted(CONFIGS.rglob("*.toml")) if CONFIGS.is_dir() else []


@pytest.mark.skipif(not SHIPPED, reason="no configs/*.toml shipped yet")
@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_shipped_config_files_load(path: Path) -> None:
    load(BrokerConfig, path, env={})
    load(ClientConfig, path, env={})
