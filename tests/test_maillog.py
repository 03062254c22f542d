"""Reading a Postfix log (issue 16): every time format and file kind a relay's log comes in,
what each queue ID's lines prove about its message, and hostile files (huge lines, binary junk,
cut-off archives, odd Message-IDs) as skipped lines or one-line errors."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatch.errors import InputError
from dispatch.send.maillog import MAX_LINE, read_relay_log

T0 = datetime(2026, 3, 14, 9, 26, 53, 589_793).astimezone()  # a local moment, microseconds and all
NOW = (T0 + timedelta(days=2)).timestamp()

# How relays' logs write a line's time: (name, formatter, whole seconds only)
STAMPS: list[tuple[str, Callable[[datetime], str], bool]] = [
    ("syslog", lambda t: t.strftime("%b ") + f"{t.day:>2}" + t.strftime(" %H:%M:%S"), True),
    ("postfix-maillog-file", lambda t: t.strftime("%b %d %H:%M:%S"), True),
    ("syslog-precise", lambda t: t.strftime("%b %d %H:%M:%S.%f"), False),
    ("rfc3339", lambda t: t.isoformat(timespec="microseconds"), False),
    ("rfc3339-utc", lambda t: t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), False),
    ("journalctl-short-iso", lambda t: t.strftime("%Y-%m-%dT%H:%M:%S%z"), True),
    ("syslog-priority", lambda t: "<22>" + t.strftime("%b %d %H:%M:%S"), True),
]


def log_line(
    stamp: Callable[[datetime], str], seconds: float, program: str, text: str, host: str = "relay"
) -> str:
    where = f"{host} " if host else ""
    return f"{stamp(T0 + timedelta(seconds=seconds))} {where}{program}: {text}\n"


def story(stamp: Callable[[datetime], str], host: str = "relay", prefix: str = "postfix") -> str:
    """Five messages: kept; cut before its final dot (smtpd says so before cleanup logs the id);
    read with nothing after it (a filtered log); refused by a milter; sent twice, once cut."""
    p = prefix
    lines = [
        (0, f"{p}/smtpd[100]", "connect from client.example.org[192.0.2.1]"),
        (1, f"{p}/smtpd[100]", "4AAA1: client=client.example.org[192.0.2.1]"),
        (1, f"{p}/cleanup[200]", "4AAA1: message-id=<kept@example.org>"),
        (1, f"{p}/qmgr[300]", "4AAA1: from=<news@example.org>, size=900, nrcpt=1 (queue active)"),
        (2, f"{p}/smtpd[101]", "4BBB2: client=client.example.org[192.0.2.1]"),
        (2, f"{p}/smtpd[101]", "lost connection after DATA (2048 bytes) from client.example.org[192.0.2.1]"),
        (2, f"{p}/cleanup[200]", "4BBB2: message-id=<cut@example.org>"),
        (3, f"{p}/cleanup[201]", "4CCC3: message-id=<filtered@example.org>"),
        (4, f"{p}/submission/smtpd[102]", "4DDD4: client=client.example.org[192.0.2.1]"),
        (4, f"{p}/cleanup[200]", "4DDD4: message-id=<milter@example.org>"),
        (4, f"{p}/cleanup[200]", "4DDD4: milter-reject: END-OF-MESSAGE from x[192.0.2.1]: 5.7.1 spam"),
        (5, f"{p}/smtpd[103]", "4dXk3L1Tz4z9sQy: client=client.example.org[192.0.2.1]"),
        (5, f"{p}/cleanup[200]", "4dXk3L1Tz4z9sQy: message-id=<twice@example.org>"),
        (5, f"{p}/smtpd[103]", "timeout after DATA (10 bytes) from client.example.org[192.0.2.1]"),
        (6, f"{p}/smtpd[103]", "4EEE5: client=client.example.org[192.0.2.1]"),
        (6, f"{p}/cleanup[200]", "4EEE5: message-id=<twice@example.org>"),
        (7, f"{p}/smtp[400]", "4EEE5: to=<ann@example.org>, relay=mx[192.0.2.9]:25, status=sent (250 ok)"),
        (8, "CRON[500]", "(root) CMD (true)"),
    ]  # fmt: skip
    return "".join(log_line(stamp, s, prog, text, host) for s, prog, text in lines)


KEPT = {"<kept@example.org>": True, "<cut@example.org>": False, "<filtered@example.org>": True,
        "<milter@example.org>": False}  # fmt: skip


@pytest.mark.parametrize(("name", "stamp", "whole"), STAMPS, ids=[s[0] for s in STAMPS])
@pytest.mark.parametrize("host", ["relay", ""], ids=["with-host", "without-host"])
@pytest.mark.parametrize("prefix", ["postfix", "postfix-out"])
def test_every_time_format_with_and_without_a_host_reads_the_same_story(
    tmp_path: Path, name: str, stamp: Callable[[datetime], str], whole: bool, host: str, prefix: str
) -> None:
    path = tmp_path / "maillog"
    path.write_text(story(stamp, host, prefix), encoding="utf-8")

    log = read_relay_log([path], now=NOW)

    assert {mid: log.seen(mid)[0].kept for mid in KEPT} == KEPT
    assert [s.kept for s in log.seen("<twice@example.org>")] == [False, True]
    assert log.seen("<kept@example.org>")[0].queue_id == "4AAA1"
    assert log.seen("<kept@example.org>")[0].where == "maillog:3"
    assert log.seen("<cut@example.org>")[0].said() == (
        "read it as 4BBB2 (maillog:7) but dropped it: the connection ended before the final dot"
    )
    assert log.seen("<filtered@example.org>")[0].how == "read"
    assert log.seen("<milter@example.org>")[0].how == "refused"
    (only,) = log.files
    assert (only.lines, only.postfix_lines, only.skipped) == (18, 17, 0)
    precision = 1.0 if whole else 1e-5
    assert only.first == pytest.approx(T0.timestamp(), abs=precision)
    assert only.last == pytest.approx(T0.timestamp() + 8, abs=precision)
    assert log.resolution == (1.0 if whole else 0.0)


ARCHIVES: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("plain", lambda data: data),
    ("gzip", gzip.compress),
    ("bzip2", bz2.compress),
    ("xz", lzma.compress),
]


@pytest.mark.parametrize(("kind", "pack"), ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_rotated_and_compressed_files_in_any_order_read_as_one_log(
    tmp_path: Path, kind: str, pack: Callable[[bytes], bytes]
) -> None:
    """maillog.2 (compressed), maillog.1, maillog: given newest first, read oldest first, so a
    session whose data was cut in the next file is still followed."""
    stamp = STAMPS[1][1]
    texts = [
        log_line(stamp, 0, "postfix/smtpd[7]", "5AAA1: client=c[192.0.2.1]")
        + log_line(stamp, 1, "postfix/cleanup[8]", "5AAA1: message-id=<across@example.org>"),
        log_line(stamp, 3600, "postfix/smtpd[7]", "lost connection after DATA (9 bytes) from c[192.0.2.1]")
        + log_line(stamp, 3601, "postfix/cleanup[8]", "5BBB2: message-id=<late@example.org>"),
        log_line(stamp, 7200, "postfix/qmgr[9]", "5BBB2: removed"),
    ]
    paths = [tmp_path / "maillog.2.gz", tmp_path / "maillog.1", tmp_path / "maillog"]
    paths[0].write_bytes(pack(texts[0].encode()))
    for path, text in zip(paths[1:], texts[1:], strict=True):
        path.write_text(text, encoding="utf-8")

    log = read_relay_log(reversed(paths), now=NOW)

    assert [f.path.name for f in log.files] == ["maillog.2.gz", "maillog.1", "maillog"]
    assert log.seen("<across@example.org>")[0].kept is False
    assert log.seen("<late@example.org>")[0].kept is True
    assert (log.first, log.last) == (int(T0.timestamp()), int(T0.timestamp()) + 7200)


def test_the_same_file_given_twice_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_text(story(STAMPS[0][1]), encoding="utf-8")
    (tmp_path / "link").symlink_to(path)

    log = read_relay_log([path, tmp_path / "link", path], now=NOW)

    assert len(log.files) == 1
    assert len(log.seen("<kept@example.org>")) == 1


JUNK = bytes(range(256)) * 4 + b"\x00\xff\xfe\x1b[2J\r\n"


@pytest.mark.parametrize(
    ("garbage", "skipped"),
    [(b"A" * (5 * MAX_LINE) + b"\n", 1), (b"B" * (3 * MAX_LINE), 1), (JUNK, 5), (b"\n\n\n", 3),
     (b"Feb 30 10:00:00 relay postfix/qmgr[1]: 9ZZZ9: removed\n", 0)],
    ids=["huge-line", "huge-line-at-the-end", "binary-junk", "blank-lines", "no-such-date"],
)  # fmt: skip
def test_lines_that_are_not_log_lines_are_skipped_and_counted(
    tmp_path: Path, garbage: bytes, skipped: int
) -> None:
    good = story(STAMPS[0][1]).encode()
    path = tmp_path / "maillog"
    path.write_bytes(garbage + good if garbage.endswith(b"\n") else good + garbage)

    log = read_relay_log([path], now=NOW)

    assert log.files[0].skipped == skipped
    assert {mid: log.seen(mid)[0].kept for mid in KEPT} == KEPT


@pytest.mark.parametrize(
    "message_id",
    [
        "<odd \x1b[31mred@example.org>",
        "<\u202eevil@example.org>",
        "<a@b> trailing words",
        "",
        "<" + "x" * 900 + ">",
    ],
    ids=["escape-sequence", "bidi-override", "trailing-words", "empty", "very-long"],
)
def test_a_message_id_with_odd_characters_is_read_as_written(tmp_path: Path, message_id: str) -> None:
    path = tmp_path / "maillog"
    path.write_text(
        log_line(STAMPS[0][1], 0, "postfix/cleanup[1]", f"7AAA7: message-id={message_id}"), "utf-8"
    )

    log = read_relay_log([path], now=NOW)

    assert [s.queue_id for s in log.seen(message_id)] == ["7AAA7"]


def _cut_gzip(data: bytes) -> bytes:
    return gzip.compress(data)[:-30]


def _damaged_gzip(data: bytes) -> bytes:
    packed = bytearray(gzip.compress(data))
    packed[len(packed) // 2 : len(packed) // 2 + 8] = b"\xff" * 8
    return bytes(packed)


@pytest.mark.parametrize(
    ("content", "words"),
    [(_cut_gzip, "cut short"), (_damaged_gzip, "cannot be read past line"),
     (lambda data: b"\x28\xb5\x2f\xfd" + data, "zstd"),
     (lambda data: b"email,name\nann@example.org,Ann\n", "no Postfix log line"),
     (lambda data: b"", "no Postfix log line")],
    ids=["truncated-gzip", "damaged-gzip", "zstd", "not-a-log", "empty"],
)  # fmt: skip
def test_a_file_that_cannot_be_read_is_one_error_naming_it(
    tmp_path: Path, content: Callable[[bytes], bytes], words: str
) -> None:
    path = tmp_path / "maillog.3.gz"
    path.write_bytes(content(story(STAMPS[0][1]).encode() * 20))

    with pytest.raises(InputError) as raised:
        read_relay_log([path], now=NOW)

    assert str(path) in str(raised.value)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo"])
def test_a_path_that_is_no_regular_file_is_one_error_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "maillog"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)

    with pytest.raises(InputError, match=str(path)):
        read_relay_log([path], now=NOW)


def test_a_file_without_postfix_lines_next_to_real_ones_is_read_and_noted(tmp_path: Path) -> None:
    real, empty = tmp_path / "maillog.1", tmp_path / "maillog"
    real.write_text(story(STAMPS[0][1]), encoding="utf-8")
    empty.write_bytes(b"")

    log = read_relay_log([empty, real], now=NOW)

    assert [(f.path.name, f.postfix_lines) for f in log.files] == [("maillog.1", 17), ("maillog", 0)]


def test_a_year_less_time_is_never_in_the_future(tmp_path: Path) -> None:
    """Syslog gives no year: 31 December read on 2 January is last year's."""
    path = tmp_path / "maillog"
    path.write_text("Dec 31 23:59:59 relay postfix/qmgr[1]: 1AAAA: removed\n", encoding="utf-8")
    now = datetime(2027, 1, 2, 8, 0).astimezone().timestamp()

    log = read_relay_log([path], now=now)

    assert log.first == datetime(2026, 12, 31, 23, 59, 59).astimezone().timestamp()
