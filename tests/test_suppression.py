"""dispatch.state.suppression: the suppression store (issue 7), on real SQLite files in tmp_path,
with exports shaped like Mailchimp's, listmonk's and a spreadsheet's written byte for byte."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.errors import InputError
from dispatch.state.db import StateError
from dispatch.state.suppression import ALL_LISTS, REASONS, Entry, SuppressionStore

WriteFile = Callable[..., Path]
NEWS, OTHER = "news.example.org", "other.example.org"


@pytest.fixture
def store(tmp_path: Path) -> SuppressionStore:
    return SuppressionStore(tmp_path / "state")


def reasons(store: SuppressionStore, key: str, list_id: str) -> str | None:
    entry = store.lookup(key, list_id)
    return None if entry is None else entry.reason


# --- Scope rules, idempotence, remove ------------------------------------------------------


def test_an_unsubscribe_suppresses_its_list_only(store: SuppressionStore) -> None:
    assert store.add("Ann@Example.org", "unsubscribed", scope=NEWS, source="serve")
    entry = store.lookup("ann@example.org", NEWS)
    assert entry is not None
    assert (entry.key, entry.reason, entry.scope, entry.source) == (
        "ann@example.org",
        "unsubscribed",
        NEWS,
        "serve",
    )
    assert store.lookup("ann@example.org", OTHER) is None
    assert store.lookup("bob@example.org", NEWS) is None


@pytest.mark.parametrize("reason", ["bounced", "complained", "manual"])
def test_other_reasons_suppress_every_list(store: SuppressionStore, reason: str) -> None:
    store.add("ann@example.org", reason, source="bounce:issue-1")
    for list_id in (NEWS, OTHER):
        entry = store.lookup("ann@example.org", list_id)
        assert entry is not None
        assert (entry.reason, entry.scope) == (reason, ALL_LISTS)


def test_a_list_given_explicitly_is_kept(store: SuppressionStore) -> None:
    store.add("ann@example.org", "manual", scope=NEWS)
    assert reasons(store, "ann@example.org", NEWS) == "manual"
    assert reasons(store, "ann@example.org", OTHER) is None


def test_an_unsubscribe_needs_a_list(store: SuppressionStore) -> None:
    with pytest.raises(InputError, match="one list"):
        store.add("ann@example.org", "unsubscribed")
    assert store.count() == 0


def test_list_ids_compare_without_case_and_a_bounce_is_named_first(store: SuppressionStore) -> None:
    store.add("ann@example.org", "unsubscribed", scope="News.Example.ORG", when=100)
    assert reasons(store, "ann@example.org", NEWS) == "unsubscribed"
    store.add("ann@example.org", "bounced", when=200)
    assert reasons(store, "ann@example.org", "NEWS.example.org") == "bounced"


def test_adding_twice_changes_nothing(store: SuppressionStore) -> None:
    assert store.add("ann@example.org", "bounced", when=1000)
    assert not store.add("ANN@example.org", "bounced", when=2000, source="other")
    assert [(e.when, e.source) for e in store.entries()] == [(1000, "manual")]
    assert store.add("ann@example.org", "unsubscribed", scope=NEWS)  # another scope: another entry
    assert store.count() == 2


def test_remove_by_scope_and_reason(store: SuppressionStore) -> None:
    store.add("ann@example.org", "unsubscribed", scope=NEWS)
    store.add("ann@example.org", "unsubscribed", scope=OTHER)
    store.add("ann@example.org", "complained")
    assert store.remove("ann@example.org", scope=NEWS, reason="unsubscribed") == 1
    assert reasons(store, "ann@example.org", NEWS) == "complained"  # a complaint stays
    assert store.remove("ann@example.org", scope=NEWS, reason="unsubscribed") == 0
    assert store.remove("Ann@Example.org") == 2
    assert store.count() == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add("not-an-address", "manual"), "not an email address"),
        (lambda s: s.add("ann@example.org", "spam"), "unknown suppression reason"),
        (lambda s: s.add("ann@example.org", "manual", scope="Weekly News"), "not a list id"),
        (lambda s: s.remove("ann@example.org", reason="gone"), "unknown suppression reason"),
    ],
)
def test_bad_input_is_a_one_line_error(
    store: SuppressionStore, call: Callable[[SuppressionStore], object], message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        call(store)
    assert "\n" not in str(caught.value)


def test_a_reader_sees_each_write_at_once_and_cannot_write(tmp_path: Path, store: SuppressionStore) -> None:
    assert SuppressionStore.open_existing(tmp_path / "nowhere") is None
    reader = SuppressionStore.open_existing(tmp_path / "state")
    assert reader is not None
    with reader:
        store.add("ann@example.org", "unsubscribed", scope=NEWS)
        assert reasons(reader, "ann@example.org", NEWS) == "unsubscribed"
        with pytest.raises(StateError, match="suppression store"):
            reader.add("bob@example.org", "manual")
    assert (tmp_path / "state" / "suppression.sqlite3").stat().st_mode & 0o077 == 0


def test_entries_are_read_in_pages(store: SuppressionStore, write_file: WriteFile) -> None:
    rows = "".join(f"user{n:05}@example.org,{reason}\n" for n in range(1500) for reason in REASONS[1:])
    assert store.import_csv(write_file("many.csv", "email,reason\n" + rows)).added == 4500  # 2+ pages
    keys = [e.key for e in store.entries()]
    assert keys == sorted(keys)
    assert len(keys) == 4500 == store.count()
    assert len(set(keys)) == 1500


# --- Concurrency: processes that share the file ----------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dispatch.state.suppression import SuppressionStore
    state, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    while not (state.parent / "go").exists():  # all start together, on a store nobody created yet
        time.sleep(0.005)
    store = SuppressionStore(state)
    for n in range(count):
        store.add(f"{prefix}{n}@example.org", "unsubscribed", scope="news.example.org", source=prefix)
        if n % 40 == 0:
            store.import_csv(Path(sys.argv[4]), reason="bounced")
""")
READER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dispatch.state.suppression import SuppressionStore
    state, stop = Path(sys.argv[1]), Path(sys.argv[2])
    store = SuppressionStore(state)
    lookups = 0
    while not stop.exists() or lookups < 100:
        store.lookup(f"a{lookups % 200}@example.org", "news.example.org")
        lookups += 1
    print(lookups, store.count())
""")


def test_concurrent_writers_and_a_reader_lose_nothing(tmp_path: Path, write_file: WriteFile) -> None:
    state, stop = tmp_path / "state", tmp_path / "stop"
    batch = write_file("batch.csv", "email\n" + "".join(f"batch{n}@example.org\n" for n in range(300)))

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", script, str(state), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    writers = [start(WRITER, prefix, "120", str(batch)) for prefix in ("a", "b")]
    (tmp_path / "go").touch()
    reader = start(READER, str(stop))
    results = [w.communicate(timeout=120) for w in writers]
    stop.touch()
    out, err = reader.communicate(timeout=120)
    for (_, error), process in zip(results, writers, strict=True):
        assert process.returncode == 0, error
        assert "locked" not in error
    assert reader.returncode == 0, err
    assert int(out.split()[0]) >= 100
    with SuppressionStore(state) as store:
        assert store.count() == 2 * 120 + 300
        assert all(store.lookup(f"{p}{n}@example.org", NEWS) for p in "ab" for n in range(120))


# --- Import ----------------------------------------------------------------------------------


def test_import_a_mailchimp_cleaned_export(store: SuppressionStore, write_file: WriteFile) -> None:
    path = write_file(
        "cleaned_members_export.csv",
        "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,"
        "CLEAN_CAMPAIGN_ID,LEID,EUID,NOTES\r\n"
        'gone@example.org,Gone,Away,2,2021-03-01 10:00:00,2024-05-06 07:08:09,"Spring, 2024",abc,1,x,\r\n'
        "Old.Box@Example.COM,,,1,,2024-05-07 00:00:00,Spring,abc,2,y,\r\n",
    )
    report = store.import_csv(path)
    assert (report.added, report.existing, report.skipped) == (2, 0, [])
    entry = store.lookup("gone@example.org", NEWS)
    assert entry is not None
    assert (entry.reason, entry.scope, entry.source) == ("bounced", "*", "import:cleaned_members_export.csv")
    assert entry.iso_time == "2024-05-06T07:08:09Z"
    assert reasons(store, "old.box@example.com", OTHER) == "bounced"


def test_import_a_mailchimp_unsubscribed_export_needs_the_list(
    store: SuppressionStore, write_file: WriteFile
) -> None:
    path = write_file(
        "unsubscribed_members_export.csv",
        "Email Address,First Name,UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_REASON,UNSUB_REASON_OTHER\n"
        "ann@example.org,Ann,2024-01-02 03:04:05,Weekly,I no longer want to receive these emails,\n"
        "bob@example.com,Bob,2024-01-03 03:04:05,Weekly,Spam,\n",
    )
    with pytest.raises(InputError, match=r"line 2: an unsubscribe applies to one list"):
        store.import_csv(path)
    assert store.count() == 0  # nothing written
    report = store.import_csv(path, scope=NEWS)
    assert report.added == 2
    assert reasons(store, "bob@example.com", NEWS) == "unsubscribed"  # UNSUB_REASON is free text
    assert reasons(store, "ann@example.org", OTHER) is None


def test_import_a_listmonk_export(store: SuppressionStore, write_file: WriteFile) -> None:
    path = write_file(
        "subscribers.csv",
        "uuid,email,name,attributes,status,created_at,updated_at\n"
        'a1,ann@example.org,Ann,"{""city"": ""Paris, FR""}",enabled,2024-01-01T00:00:00Z,2024-01-01T00:00Z\n'
        "b2,bob@example.org,Bob,{},blocklisted,2024-01-01T00:00:00Z,2024-02-01T00:00:00Z\n"
        "c3,cy@example.org,Cy,{},disabled,2024-01-01T00:00:00Z,2024-02-01T00:00:00Z\n",
    )
    report = store.import_csv(path)
    assert report.added == 2
    assert [(s.line, s.reason) for s in report.skipped] == [
        (2, "status 'enabled' is not an opt-out; not suppressed")
    ]
    assert reasons(store, "bob@example.org", NEWS) == "manual"
    assert reasons(store, "cy@example.org", OTHER) == "manual"  # an unknown word: manual
    assert reasons(store, "ann@example.org", NEWS) is None


def test_import_a_spreadsheet_with_bad_rows_reported_by_line(
    store: SuppressionStore, write_file: WriteFile
) -> None:
    rows = [
        "E-mail;Reason;List;Note",
        "hard@example.org;Hard Bounce;;",
        "angry@example.org;Spam complaint;;",
        'quoted@example.org;unsubscribed;news.example.org;"two\nlines"',
        "not-an-address;bounced;;",
        ";;;",
        "weekly@example.org;manual;Weekly News;",
        "kept@example.org;Do Not Email;other.example.org;",
        "pending@example.org;pending;;",
        "=cmd@example.org;whatever;;",
    ]
    path = write_file("sheet.csv", ("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    report = store.import_csv(path, source="sheet")
    assert report.added == 5
    assert [(s.line, s.reason.split(":")[0]) for s in report.skipped] == [
        (6, "invalid address 'not-an-address'"),
        (7, "empty row"),
        (8, "'Weekly News' is not a list id like news.example.org (or * for every list)"),
        (10, "status 'pending' is not an opt-out; not suppressed"),
    ]
    assert reasons(store, "hard@example.org", NEWS) == "bounced"
    assert reasons(store, "angry@example.org", NEWS) == "complained"
    assert reasons(store, "quoted@example.org", NEWS) == "unsubscribed"
    assert reasons(store, "kept@example.org", OTHER) == "manual"
    assert reasons(store, "kept@example.org", NEWS) is None
    assert reasons(store, "=cmd@example.org", NEWS) == "manual"
    assert {e.source for e in store.entries()} == {"sheet"}


def test_import_a_plain_list_with_an_explicit_reason_twice(
    store: SuppressionStore, write_file: WriteFile
) -> None:
    path = write_file("plain.txt", "ann@example.org\nbob@example.org\nANN@example.org\n")
    first = store.import_csv(path, reason="complained")
    assert (first.added, first.existing, first.skipped) == (2, 1, [])
    again = store.import_csv(path, reason="complained")
    assert (again.added, again.existing) == (0, 3)
    assert reasons(store, "bob@example.org", NEWS) == "complained"


def test_import_many_rows_in_one_go(store: SuppressionStore, write_file: WriteFile) -> None:
    path = write_file(
        "big.csv", "email,status\n" + "".join(f"u{n}@example.org,cleaned\n" for n in range(20_000))
    )
    assert store.import_csv(path).added == 20_000
    assert store.count() == 20_000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name,city\nAnn,Paris\n", "no email column in the header"),
        (b"email\nann@example.org\n\xff\xfe\n", "line 3 is not UTF-8 text"),
        (b"email\n" + b"someone@example.org\n" * 5000 + b"caf\xe9@example.org\n", "line 5002 is not UTF-8"),
        (b"\x00\x01\x02email\x00\n", "binary file"),
    ],
)
def test_files_that_cannot_be_imported(
    store: SuppressionStore, write_file: WriteFile, content: str | bytes, message: str
) -> None:
    path = write_file("bad.csv", content)
    with pytest.raises(InputError, match=message) as caught:
        store.import_csv(path)
    assert "\n" not in str(caught.value)
    assert store.count() == 0


def test_an_unclosed_quote_is_a_bad_row(store: SuppressionStore, write_file: WriteFile) -> None:
    path = write_file("open.csv", 'email,reason\nann@example.org,bounced\n"bob@example.org,bounced\n')
    report = store.import_csv(path)
    assert report.added == 1
    assert [(s.line, s.reason.startswith("invalid address")) for s in report.skipped] == [(3, True)]


def test_a_fifo_a_folder_or_a_missing_file_is_refused_at_once(
    store: SuppressionStore, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        store.import_csv(fifo)  # no writer: opening it to read would block without the check
    with pytest.raises(InputError, match="is a folder"):
        store.import_csv(tmp_path)
    with pytest.raises(InputError, match="no such"):
        store.import_csv(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="not a known text encoding"):
        store.import_csv(tmp_path / "missing.csv", encoding="klingon")


# --- Export ----------------------------------------------------------------------------------


def fill(store: SuppressionStore) -> None:
    store.add("ann@example.org", "unsubscribed", scope=NEWS, source="serve", when=1_700_000_000)
    store.add("-dash@example.org", "bounced", source="bounce:issue-7", when=1_700_000_100)
    store.add("=sum@example.org", "complained", source='=HYPERLINK("x")', when=1_700_000_200)
    store.add("+plus@example.org", "manual", scope=OTHER, source="@admin", when=1_700_000_300)
    store.add("'quote@example.org", "manual", source="'already", when=1_700_000_400)


def test_csv_export_is_safe_in_a_spreadsheet_and_imports_back(
    store: SuppressionStore, tmp_path: Path
) -> None:
    fill(store)
    out = io.StringIO()
    assert store.export_csv(out) == 5
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["email", "reason", "list", "time", "source"]
    assert not [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@"))]
    assert ["ann@example.org", "unsubscribed", NEWS, "2023-11-14T22:13:20Z", "serve"] in rows
    exported = tmp_path / "export.csv"
    exported.write_text(out.getvalue(), encoding="utf-8")
    fresh = SuppressionStore(tmp_path / "other-state")
    report = fresh.import_csv(exported)
    assert (report.added, report.skipped) == (5, [])
    assert list(fresh.entries()) == list(store.entries())


def test_json_export(store: SuppressionStore) -> None:
    out = io.StringIO()
    assert store.export_json(out) == 0
    assert json.loads(out.getvalue()) == []
    fill(store)
    out = io.StringIO()
    assert store.export_json(out) == 5
    records = json.loads(out.getvalue())
    assert records[-1] == {"email": "ann@example.org", "reason": "unsubscribed", "list": NEWS,
                           "time": "2023-11-14T22:13:20Z", "source": "serve"}  # fmt: skip
    assert [Entry(r["email"], r["reason"], r["list"], 0, r["source"]).key for r in records] == [
        e.key for e in store.entries()
    ]
