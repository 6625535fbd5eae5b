"""zchat/accounts.py: the accounts file the IRC and web doors check logins against."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from zchat.accounts import (
    Accounts,
    AccountsError,
    fingerprint,
    hash_password,
    normalize_fingerprint,
)

FP = "sha256:" + "ab" * 32


def test_set_save_load_verify(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "accounts"
    accounts = Accounts.load(path, missing_ok=True)
    assert len(accounts) == 0
    accounts.set("Alice", "s3cret")
    accounts.set("bob", "hunter2", add_fingerprint=FP.upper().replace("SHA256:", ""))
    accounts.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Accounts.load(path)
    assert again.verify("alice", "s3cret") and again.verify("ALICE", "s3cret")
    assert not again.verify("alice", "S3cret")
    assert not again.verify("carol", "s3cret")
    assert again.by_fingerprint(FP) == "bob"
    assert again.by_fingerprint("sha256:" + "cd" * 32) is None
    assert again.get("ALICE") is not None and again.get("ALICE").name == "Alice"  # type: ignore[union-attr]


def test_hashes_are_salted_and_passwords_kept_out(tmp_path: Path) -> None:
    assert hash_password("x") != hash_password("x")
    accounts = Accounts.load(tmp_path / "a", missing_ok=True)
    accounts.set("alice", "plaintext-password")
    accounts.save()
    assert "plaintext-password" not in (tmp_path / "a").read_text()


def test_certificate_only_account(tmp_path: Path) -> None:
    accounts = Accounts.load(tmp_path / "a", missing_ok=True)
    accounts.set("bot", None, add_fingerprint=FP)
    accounts.save()
    loaded = Accounts.load(tmp_path / "a")
    assert loaded.by_fingerprint(FP) == "bot"
    assert not loaded.verify("bot", "")  # no password at all: never matches


@pytest.mark.parametrize(
    ("content", "why"),
    [("bad!name scrypt$1$1$1$a$b\n", "line 1"), ("alice md5$x\n", "scrypt"),
     ("# c\nalice - notafingerprint\n", "line 2")],
)  # fmt: skip
def test_malformed_lines_named(tmp_path: Path, content: str, why: str) -> None:
    (tmp_path / "a").write_text(content)
    with pytest.raises(AccountsError, match=why):
        Accounts.load(tmp_path / "a")


def test_missing_file_is_an_error_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match="does not exist"):
        Accounts.load(tmp_path / "none")


def test_refusals(tmp_path: Path) -> None:
    accounts = Accounts.load(tmp_path / "a", missing_ok=True)
    with pytest.raises(ValueError):
        accounts.set("alice", "")
    with pytest.raises(ValueError):
        accounts.set("alice", None)  # neither password nor certificate
    assert "alice" not in accounts
    accounts.set("alice", "pw")
    assert not accounts.verify("alice", "p" * 5000)  # over the limit: no scrypt of megabytes


def test_changed_notices_a_rewrite(tmp_path: Path) -> None:
    accounts = Accounts.load(tmp_path / "a", missing_ok=True)
    accounts.set("alice", "pw")
    accounts.save()
    loaded = Accounts.load(tmp_path / "a")
    assert not loaded.changed()
    other = Accounts.load(tmp_path / "a")
    other.set("bob", "pw")
    import os

    other.save()
    os.utime(tmp_path / "a", ns=(1, 1))
    assert loaded.changed()


def test_fingerprints() -> None:
    assert fingerprint(b"x").startswith("sha256:") and len(fingerprint(b"x")) == 71
    assert normalize_fingerprint(":".join(["AB"] * 32)) == FP
    with pytest.raises(ValueError):
        normalize_fingerprint("sha256:12")
