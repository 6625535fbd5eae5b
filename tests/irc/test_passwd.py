"""`zchat passwd NAME`: writes the accounts file the IRC door checks SASL logins against."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from zchat.accounts import Accounts
from zchat.cli import main

FP = "sha256:" + "0f" * 32


def test_passwd_prompt_stdin_cert_delete(tmp_path: Path) -> None:
    path = str(tmp_path / "accounts")
    run = CliRunner().invoke
    done = run(main, ["passwd", "--accounts", path, "alice"], input="pw1\npw1\n")
    assert done.exit_code == 0, done.output
    done = run(main, ["passwd", "--accounts", path, "bob", "--password-stdin"], input="pw2\n")
    assert done.exit_code == 0, done.output
    done = run(main, ["passwd", "--accounts", path, "bot", "--no-password", "--cert", FP])
    assert done.exit_code == 0, done.output
    book = Accounts.load(path)
    assert book.verify("alice", "pw1") and book.verify("bob", "pw2")
    assert book.by_fingerprint(FP) == "bot"
    done = run(main, ["passwd", "--accounts", path, "bob", "--delete"])
    assert done.exit_code == 0 and "bob" not in Accounts.load(path)


def test_passwd_refusals(tmp_path: Path) -> None:
    path = str(tmp_path / "accounts")
    run = CliRunner().invoke
    bad = run(main, ["passwd", "--accounts", path, "b!d", "--password-stdin"], input="x\n")
    assert bad.exit_code == 1 and "invalid nick" in bad.output
    empty = run(main, ["passwd", "--accounts", path, "alice", "--password-stdin"], input="\n")
    assert empty.exit_code == 1 and "empty" in empty.output
    nofile = run(main, ["passwd", "alice"], env={"ZCHAT_CONFIG": "", "ZCHAT_ACCOUNTS": ""})
    assert nofile.exit_code == 1 and "no accounts file" in nofile.output
