"""Library-level checks of the hardening the red-team suites drove (tests/test_attacks_*.py run
the same things end to end through the CLI): header folding, settings names, the mailto
setting, output file modes and pruning beside a running send."""

from __future__ import annotations

import re
import stat
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from dispatch.compose.headers import fold_mailbox, phrase_header
from dispatch.compose.issue import human_size
from dispatch.errors import ConfigError, LockedError
from dispatch.files import OutputFolder
from dispatch.settings import Settings, unknown_settings
from dispatch.state.journal import Journal

NAMES = [
    "Ann Example",
    "The Newsroom, Weekly Edition of the Example Foundation <boss@example.com>; and friends",
    'Quote "inside" and \\ backslash, comma',
    "Newsroom " * 20,
    "N" * 150,
    "Редакция, «Пример»; <x@example.com>",
    "=?utf-8?q?looks_encoded?=",
    "a:b;c@d.example, e@f.example",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("header", ["To", "From", "Reply-To"])
def test_a_display_name_never_becomes_a_second_address(header: str, name: str) -> None:
    raw = fold_mailbox(header, name, "reader@example.org")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")), raw
    message = message_from_bytes(raw + b"\r\n", policy=policy.default)
    addresses = message[header].addresses
    assert [a.addr_spec for a in addresses] == ["reader@example.org"]
    assert shown_name(raw) == " ".join(name.split())


def shown_name(raw: bytes) -> str:
    """The display name as an RFC 2047 reader shows it: whitespace between adjacent
    encoded-words dropped (Python's address parser keeps it, unlike mail programs)."""
    value = re.sub(r"\r\n[ \t]", " ", raw.decode("ascii").split(":", 1)[1]).strip()
    phrase = value.rsplit("<", 1)[0].strip()
    if "=?" in phrase and not phrase.startswith('"'):
        return str(make_header(decode_header(phrase)))
    message = message_from_bytes(raw + b"\r\n", policy=policy.default)
    return str(next(iter(message.values())).addresses[0].display_name)


@pytest.mark.parametrize("name", NAMES)
def test_list_id_phrase_keeps_one_id(name: str) -> None:
    raw = phrase_header("List-Id", " ".join(name.split()), "news.example.org")
    assert raw.count(b"<news.example.org>") == 1
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")), raw
    assert raw.rstrip(b"\r\n").endswith(b"<news.example.org>")


@pytest.mark.parametrize(
    ("name", "close"),
    [
        ("dispatch_smtp_host", "DISPATCH_SMTP_HOST"),
        ("DISPATH_FROM", "DISPATCH_FROM"),
        ("DISPATCHSMTP_PASSWORD", "DISPATCH_SMTP_PASSWORD"),
        ("DISPATCH_CONECTIONS", "DISPATCH_CONNECTIONS"),
    ],
)
def test_near_miss_setting_names_are_caught(name: str, close: str) -> None:
    assert unknown_settings([name]) == [(name, close)]


@pytest.mark.parametrize("name", ["DISPLAY", "PATH", "DATABASE_URL", "DISPATCH_FROM", "HOME"])
def test_other_programs_settings_are_left_alone(name: str) -> None:
    assert unknown_settings([name]) == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("mailto:leave@example.org", True),
        ("mailto:leave@example.org?subject=unsubscribe", True),
        ("mailto:leave@example.org?subject=x&body=please", True),
        ("mailto:leave@example.org?cc=boss@example.com", False),
        ("mailto:leave@example.org?subject=x&bcc=boss@example.com", False),
        ("mailto:leave@example.org?to=boss@example.com", False),
        ("mailto:leave@example.org?In-Reply-To=x", False),
    ],
)
def test_unsubscribe_mailto_takes_only_subject_and_body(value: str, ok: bool) -> None:
    mapping = {"DISPATCH_UNSUBSCRIBE_MAILTO": value}
    if ok:
        assert Settings.from_mapping(mapping).unsubscribe_mailto == value
    else:
        with pytest.raises(ConfigError, match="only subject= and body="):
            Settings.from_mapping(mapping)


@pytest.mark.parametrize(
    ("n", "shown"), [(0, "0 bytes"), (980, "980 bytes"), (10_000, "9.8 KB"), (3_250_000, "3.1 MB")]
)
def test_sizes_read_as_a_person_reads_them(n: int, shown: str) -> None:
    assert human_size(n) == shown


@pytest.mark.parametrize(
    ("public", "file_mode", "folder_mode"), [(False, 0o600, 0o700), (True, 0o644, 0o755)]
)
def test_output_modes(tmp_path: Path, public: bool, file_mode: int, folder_mode: int) -> None:
    folder = tmp_path / "new"
    out = OutputFolder(folder, public=public)
    written = out.write("page.html", b"<p>hi</p>")
    out.close()
    assert stat.S_IMODE(written.stat().st_mode) == file_mode
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode
    assert stat.S_IMODE((folder / ".dispatch-files").stat().st_mode) == 0o600


def test_a_manifest_others_can_write_vouches_for_nothing(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path)
    out.write("page.html", b"ours")
    out.close()
    (tmp_path / ".dispatch-files").chmod(0o666)
    again = OutputFolder(tmp_path)
    with pytest.raises(Exception, match="not a file dispatch wrote"):
        again.refuse_foreign("page.html")


def test_prune_leaves_a_campaign_another_run_holds(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.begin("held", "Subject", "f1", "/a.md")
    journal.begin("idle", "Subject", "f2", "/b.md")
    other = Journal(tmp_path)  # another process, as far as the lock file is concerned
    with other.lock("held"):
        with pytest.raises(LockedError), journal.lock("held"):
            pass
        assert journal.prune_empty() == ["idle"]
    assert journal.prune_empty() == ["held"]


def test_a_hard_linked_lock_file_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "issue-1.lock").hardlink_to(victim)
    with pytest.raises(Exception, match="hard links"), journal.lock("issue-1"):
        pass
    assert victim.read_text() == "keep me"
