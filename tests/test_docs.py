"""The README's promises that a newcomer acts on first."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, re.S)


def test_readme_starts_with_run_then_test_commands() -> None:
    commands = _readme_commands()
    assert commands[0] == "python3 -m pip install -e . && zchat broker"
    test_command = commands[2]
    assert "pytest" in test_command


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = _readme_commands()[2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, "the last step of .ci/run must be README's test command"
    assert ci[-1] == test_command


def test_protocol_doc_has_the_sections_code_and_tests_cite() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    cited = set()
    for path in [*ROOT.glob("zchat/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        # "RFC 2812 §2.3" cites another document.
        cited |= set(re.findall(r"(?<!RFC \d{4} )§(\d+(?:\.\d+)?)", path.read_text()))
    headings = set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", doc, re.M))
    assert cited <= headings, f"cited but missing in docs/protocol.md: {sorted(cited - headings)}"


def test_error_codes_match_the_protocol_table() -> None:
    """§7's table and the Code enum name the same codes with the same whose-fault column."""
    from zchat.protocol import Code

    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## 7. Errors") : doc.index("## 8.")]
    rows = {
        code: fault
        for code, fault in re.findall(r"^\| `(\w+)` \|[^|]*\|[^|]*\| ([^|]+) \|", section, re.M)
    }
    assert set(rows) == {c.value for c in Code}
    for code in Code:
        assert code.fault.value in rows[code.value], (code, rows[code.value])
        assert code.retryable == ("retry_after" in rows[code.value]), code
