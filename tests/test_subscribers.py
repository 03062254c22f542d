"""dispatch.lists.subscribers on messy lists written as real files (issue 2 "Subscribers", acceptance 5).

Every list here is a real CSV file in tmp_path, written byte for byte (BOM, CRLF, odd
delimiters, quoted newlines, other encodings), and read through ``SubscriberList`` exactly as
``dispatch send`` reads it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatch.addresses import validate_address
from dispatch.errors import InputError
from dispatch.lists.subscribers import ListStats, Skipped, Subscriber, SubscriberList
from tests.conftest import EXAMPLE_SUBSCRIBERS

WriteFile = Callable[..., Path]
Item = Subscriber | Skipped


def read(path: Path, encoding: str = "utf-8-sig") -> list[Item]:
    return list(SubscriberList(path, encoding))


def valid(items: list[Item]) -> list[Subscriber]:
    return [item for item in items if isinstance(item, Subscriber)]


def skipped(items: list[Item]) -> list[Skipped]:
    return [item for item in items if isinstance(item, Skipped)]


def write_csv(write_file: WriteFile, text: str, name: str = "list.csv") -> Path:
    """Write ``text`` exactly as given (no newline translation), UTF-8."""
    return write_file(name, text.encode("utf-8"))


# --- Header aliases and delimiters -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "row", "name"),
    [
        ("email,name", "ann@example.org,Ann Lee", "Ann Lee"),
        ("Email,Name", "ann@example.org,Ann Lee", "Ann Lee"),
        ("E-mail,Full Name", "ann@example.org,Ann Lee", "Ann Lee"),
        ("Email Address,First Name", "ann@example.org,Ann", "Ann"),
        ("EMAIL ADDRESS,FULL NAME", "ann@example.org,Ann Lee", "Ann Lee"),
        ("email_address,full_name", "ann@example.org,Ann Lee", "Ann Lee"),
        ("E-Mail Address,Name", "ann@example.org,Ann Lee", "Ann Lee"),
        ("Name,Email", "Ann Lee,ann@example.org", "Ann Lee"),
        ("First Name,Last Name,Email", "Ann,Lee,ann@example.org", "Ann Lee"),
        ("Email,First Name,Last Name,City", "ann@example.org,Ann,Lee,Paris", "Ann Lee"),
        ("Email,Last Name,First Name", "ann@example.org,Lee,Ann", "Ann Lee"),
        ("Email,First Name,Last Name", "ann@example.org,,Lee", "Lee"),
        ("Email,City", "ann@example.org,Paris", ""),
    ],
)
def test_header_aliases_find_the_email_and_name_columns(
    write_file: WriteFile, header: str, row: str, name: str
) -> None:
    path = write_csv(write_file, f"{header}\n{row}\n")
    items = read(path)
    assert skipped(items) == []
    (sub,) = valid(items)
    assert (sub.email, sub.name, sub.line) == ("ann@example.org", name, 2)
    assert set(sub.fields) == set(header.split(","))  # every column stays available to templates


@pytest.mark.parametrize(
    ("delimiter", "quoted"),
    [(",", '"Doe, John"'), (";", '"Doe; John"'), ("\t", '"Doe\tJohn"'), ("|", '"Doe| John"')],
    ids=["comma", "semicolon", "tab", "pipe"],
)
def test_delimiter_is_detected_and_quoted_delimiters_stay_in_the_field(
    write_file: WriteFile, delimiter: str, quoted: str
) -> None:
    d = delimiter
    text = f"email{d}name{d}city\nann@example.org{d}Ann Example{d}Paris\njohn@example.org{d}{quoted}{d}Oslo\n"
    items = read(write_csv(write_file, text))
    assert [(s.email, s.name, s.line, s.fields["city"]) for s in valid(items)] == [
        ("ann@example.org", "Ann Example", 2, "Paris"),
        ("john@example.org", quoted.strip('"').replace("\t", " "), 3, "Oslo"),
    ]
    assert skipped(items) == []


def test_utf8_bom_and_crlf_are_handled(write_file: WriteFile) -> None:
    text = "\ufeffEmail;Name;City\r\nann@example.org;Léa Müller;Köln\r\nbob@example.com;Bob;Oslo\r\n"
    items = read(write_csv(write_file, text))
    subs = valid(items)
    assert [(s.email, s.name, s.line) for s in subs] == [
        ("ann@example.org", "Léa Müller", 2),
        ("bob@example.com", "Bob", 3),
    ]
    # The BOM is not part of the first column name and no CR survives in any value.
    assert list(subs[0].fields) == ["Email", "Name", "City"]
    assert all("\r" not in v and "\ufeff" not in v for s in subs for v in s.fields.values())
    assert subs[0].fields["City"] == "Köln"


def test_crlf_without_trailing_newline_and_bare_cr_rows(write_file: WriteFile) -> None:
    path = write_file("list.csv", b"email,name\r\nann@example.org,Ann\r\nbob@example.com,Bob")
    assert [(s.email, s.name, s.line) for s in valid(read(path))] == [
        ("ann@example.org", "Ann", 2),
        ("bob@example.com", "Bob", 3),
    ]


# --- Validation, de-duplication, skipped rows -------------------------------------------


def test_duplicates_differing_in_case_report_the_later_row(write_file: WriteFile) -> None:
    text = (
        "email,name\n"
        "Ann@Example.org,Ann\n"
        "bob@example.com,Bob\n"
        "ANN@EXAMPLE.ORG,Ann again\n"
        "  ann@example.org  ,Ann with spaces\n"
    )
    items = read(write_csv(write_file, text))
    assert [(s.email.lower(), s.line) for s in valid(items)] == [
        ("ann@example.org", 2),
        ("bob@example.com", 3),
    ]
    dupes = skipped(items)
    assert [s.line for s in dupes] == [4, 5]
    assert all("duplicate" in s.reason and "line 2" in s.reason for s in dupes)


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "ann@",
        "@example.org",
        "ann@@example.org",
        "ann example@example.org",
        "ann@example..org",
        "ann@example",
        "ann.@example.org",
        "ann@-example.org",
        "<ann@example.org>",
        "Ann <ann@example.org>",
    ],
)
def test_invalid_address_is_skipped_with_line_and_reason(write_file: WriteFile, address: str) -> None:
    quoted = '"' + address.replace('"', '""') + '"'
    text = f"email,name\nok@example.org,Ok\n{quoted},Bad\nafter@example.org,After\n"
    items = read(write_csv(write_file, text))
    assert [s.line for s in valid(items)] == [2, 4]
    (bad,) = skipped(items)
    assert bad.line == 3
    assert bad.reason.startswith("invalid address")
    assert address.strip() in bad.reason
    with pytest.raises(ValueError, match=r"\w"):
        validate_address(address)


def test_missing_address_on_a_row_with_other_values_is_reported(write_file: WriteFile) -> None:
    text = "email,name\n,Nobody\n   ,Blank\nann@example.org,Ann\n"
    items = read(write_csv(write_file, text))
    assert [(s.line, s.reason) for s in skipped(items)] == [
        (2, "no email address"),
        (3, "no email address"),
    ]
    assert [s.line for s in valid(items)] == [4]


def test_two_addresses_in_one_quoted_cell_are_rejected(write_file: WriteFile) -> None:
    text = 'email,name\n"a@example.org, b@example.org",Two\n"c@example.org",One\n'
    items = read(write_csv(write_file, text))
    (bad,) = skipped(items)
    assert bad.line == 2
    assert "a@example.org, b@example.org" in bad.reason
    assert [s.email for s in valid(items)] == ["c@example.org"]


def test_empty_rows_are_reported_with_their_line(write_file: WriteFile) -> None:
    text = "email;name\r\nann@example.org;Ann\r\n\r\n;\r\n  ;  \r\nbob@example.com;Bob\r\n"
    items = read(write_csv(write_file, text))
    assert [(s.line, s.reason) for s in skipped(items)] == [
        (3, "empty row"),
        (4, "empty row"),
        (5, "empty row"),
    ]
    assert [(s.email, s.line) for s in valid(items)] == [
        ("ann@example.org", 2),
        ("bob@example.com", 6),
    ]


def test_quoted_newlines_keep_later_line_numbers_right(write_file: WriteFile) -> None:
    text = (
        "email,name,note\n"
        'ann@example.org,"Ann\nExample","a note\r\nover\nthree lines"\n'  # lines 2-5
        "bad-address,Bad,x\n"  # 6
        'bob@example.com,"Bob, Jr.",y\n'  # 7
        "ANN@example.org,Dup,z\n"  # 8
    )
    items = read(write_csv(write_file, text))
    assert [(s.email, s.name, s.line) for s in valid(items)] == [
        ("ann@example.org", "Ann Example", 2),
        ("bob@example.com", "Bob, Jr.", 7),
    ]
    assert valid(items)[0].fields["note"] == "a note over three lines"
    assert [s.line for s in skipped(items)] == [6, 8]
    assert "duplicate of line 2" in skipped(items)[1].reason


@pytest.mark.parametrize(
    ("status", "mailed"),
    [
        ("subscribed", True),
        ("", True),
        ("active", True),
        ("unsubscribed", False),
        ("Unsubscribed", False),
        (" UNSUBSCRIBED ", False),
        ("opted out", False),
        ("opted-out", False),
        ("bounced", False),
        ("cleaned", False),
    ],
)
def test_status_column_skips_unsubscribed_rows(write_file: WriteFile, status: str, mailed: bool) -> None:
    text = f'Email,Name,Status\nann@example.org,Ann,"{status}"\nbob@example.com,Bob,subscribed\n'
    items = read(write_csv(write_file, text))
    assert [s.email for s in valid(items)] == (
        ["ann@example.org", "bob@example.com"] if mailed else ["bob@example.com"]
    )
    if not mailed:
        (row,) = skipped(items)
        assert row.line == 2
        assert "unsubscribed" in row.reason


def test_short_and_long_rows_are_still_subscribers(write_file: WriteFile) -> None:
    """Rows with fewer or more cells than the header: the known columns are used."""
    text = "email,name,city\nann@example.org\nbob@example.com,Bob,Oslo,extra,cells\n"
    items = read(write_csv(write_file, text))
    ann, bob = valid(items)
    assert (ann.email, ann.name, ann.line) == ("ann@example.org", "", 2)
    assert ann.fields["email"] == "ann@example.org"
    assert (bob.email, bob.name, bob.line) == ("bob@example.com", "Bob", 3)
    assert bob.fields == {"email": "bob@example.com", "name": "Bob", "city": "Oslo"}


# --- Values that must never reach a header as control characters ------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Eve\r\nBcc: x", "Eve Bcc: x"),
        ("Eve\nBcc: x", "Eve Bcc: x"),
        ("Eve\rBcc: x", "Eve Bcc: x"),
        ("Eve\u2028Bcc: x@example.com", "Eve Bcc: x@example.com"),
        ("Eve\u2029Mallory", "Eve Mallory"),
        ("Eve\x0b\x0c\x1b\x7f\x85Mallory", "Eve Mallory"),
        ("  Eve \t  Example  ", "Eve Example"),
        pytest.param(
            "Eve\x00Bcc: x@example.com",
            "Eve Bcc: x@example.com",
        ),
    ],
    ids=["crlf", "lf", "cr", "u2028", "u2029", "c0-c1", "spaces", "nul"],
)
def test_control_characters_in_names_and_values_are_cleaned(
    write_file: WriteFile, raw: str, clean: str
) -> None:
    cell = '"' + raw.replace('"', '""') + '"'
    text = f"email,name,city\nann@example.org,{cell},{cell}\nbob@example.com,Bob,Oslo\n"
    items = read(write_csv(write_file, text))
    subs = valid(items)
    assert [s.email for s in subs] == ["ann@example.org", "bob@example.com"]
    assert subs[0].name == clean
    assert subs[0].fields["city"] == clean
    # Line numbers count physical lines (CRLF, LF or a lone CR), as an editor shows them.
    assert subs[1].line == len(re.findall(r"\r\n|\r|\n", text[: text.index("bob@")])) + 1


@pytest.mark.parametrize(
    "raw",
    ["Eve\r\nBcc: x@example.com", "Eve\nann2@example.org,Ann", "Eve\rx@example.net", "A\nb,c,d\ne"],
    ids=["crlf-header", "lf-row", "cr-address", "delimiters"],
)
def test_a_value_spanning_lines_over_what_looks_like_rows_refuses_the_list(
    write_file: WriteFile, raw: str
) -> None:
    cell = '"' + raw.replace('"', '""') + '"'
    path = write_csv(write_file, f"email,name,city\nann@example.org,{cell},x\nbob@example.com,Bob,Oslo\n")
    with pytest.raises(InputError, match=r"lines 2–\d+ read as one row"):
        read(path)


# --- Internationalised addresses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ("info@例え.テスト", "info@xn--r8jz45g.xn--zckzah"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("  user@Example.ORG ", "user@example.org"),
    ],
)
def test_idn_domains_become_punycode(write_file: WriteFile, raw: str, wire: str) -> None:
    assert validate_address(raw) == wire
    items = read(write_csv(write_file, f'email,name\n"{raw}",Name\n'))
    (sub,) = valid(items)
    assert sub.email == wire
    assert sub.email.isascii()


def test_idn_and_punycode_spellings_are_duplicates(write_file: WriteFile) -> None:
    text = "email\nuser@bücher.example\nuser@xn--bcher-kva.example\n"
    items = read(write_csv(write_file, text))
    assert [s.line for s in valid(items)] == [2]
    assert [s.line for s in skipped(items)] == [3]


@pytest.mark.parametrize("raw", ["jörg@example.com", "用户@example.com", "zoë@bücher.example"])
def test_non_ascii_local_part_is_rejected(write_file: WriteFile, raw: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        validate_address(raw)
    items = read(write_csv(write_file, f"email,name\n{raw},Name\nok@example.org,Ok\n"))
    (bad,) = skipped(items)
    assert bad.line == 2
    assert raw in bad.reason
    assert [s.email for s in valid(items)] == ["ok@example.org"]


# --- Files that cannot be used -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["name,city", "Name;City", "mail address,name", "emails,name", "\ufeffname"],
)
def test_no_email_column_names_the_file(write_file: WriteFile, header: str) -> None:
    path = write_csv(write_file, f"{header}\nAnn,Paris\n", name="no-email.csv")
    with pytest.raises(InputError, match=r"no-email\.csv.*email") as err:
        SubscriberList(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content", [b"", b"\n\n", b"   \r\n\t\r\n", b"\xef\xbb\xbf"], ids=["zero", "lf", "ws", "bom"]
)
def test_empty_file_is_an_input_error(write_file: WriteFile, content: bytes) -> None:
    path = write_file("empty.csv", content)
    with pytest.raises(InputError, match=r"empty\.csv.*empty"):
        SubscriberList(path)


def test_header_only_list_has_no_recipients(write_file: WriteFile) -> None:
    path = write_csv(write_file, "email,name\r\n")
    assert read(path) == []
    assert SubscriberList(path).scan() == ListStats(valid=0, skipped=[])


@pytest.mark.parametrize(
    "content",
    [
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(256)) * 4,  # a zip / xlsx
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
        b"email,name\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ],
    ids=["xlsx", "png", "nuls"],
)
def test_binary_file_is_an_input_error(write_file: WriteFile, content: bytes) -> None:
    path = write_file("list.xlsx.csv", content)
    with pytest.raises(InputError, match=r"list\.xlsx\.csv") as err:
        SubscriberList(path)
    assert "\n" not in str(err.value)


def test_missing_file_and_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.csv"):
        SubscriberList(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="folder"):
        SubscriberList(tmp_path)


LATIN1_LIST = "email,name,city\nlea@example.org,Léa Müller,Zürich\nbob@example.com,Bob,Oslo\n"


@pytest.mark.parametrize("codec", ["latin-1", "cp1252"])
def test_non_utf8_file_says_how_to_fix_it(write_file: WriteFile, codec: str) -> None:
    path = write_file("latin.csv", LATIN1_LIST.encode(codec))
    with pytest.raises(InputError) as err:
        read(path)
    message = str(err.value)
    assert "latin.csv" in message
    assert "--encoding" in message
    assert "UTF-8" in message
    assert "\n" not in message


@pytest.mark.parametrize("codec", ["latin-1", "cp1252"])
def test_non_utf8_file_reads_with_its_encoding(write_file: WriteFile, codec: str) -> None:
    path = write_file("latin.csv", LATIN1_LIST.encode(codec))
    items = read(path, encoding=codec)
    assert [(s.email, s.name, s.fields["city"]) for s in valid(items)] == [
        ("lea@example.org", "Léa Müller", "Zürich"),
        ("bob@example.com", "Bob", "Oslo"),
    ]
    assert SubscriberList(path, codec).scan().valid == 2


@pytest.mark.parametrize("good_rows", [2, 4000], ids=["in-header-sample", "far-in-file"])
def test_non_utf8_error_names_the_line_of_the_bad_byte(write_file: WriteFile, good_rows: int) -> None:
    body = "".join(f"user{i}@example.org,User {i}\n" for i in range(good_rows)).encode()
    path = write_file("late.csv", b"email,name\n" + body + b"lea@example.org,L\xe9a\n")
    bad_line = good_rows + 2
    with pytest.raises(InputError, match="--encoding") as err:
        read(path)
    assert re.search(rf"\bline {bad_line}\b", str(err.value)), str(err.value)


def test_unknown_encoding_is_an_input_error(write_file: WriteFile) -> None:
    path = write_csv(write_file, "email\nann@example.org\n")
    with pytest.raises(InputError, match="--encoding"):
        SubscriberList(path, encoding="no-such-codec")


# --- Every skipped row reported once -----------------------------------------------------

MESSY = (
    "\ufeffE-mail;Full Name;Status;City\r\n"  # 1
    "ann@example.org;Ann Example;subscribed;Paris\r\n"  # 2
    "ANN@EXAMPLE.ORG;Ann again;subscribed;Paris\r\n"  # 3 duplicate of 2
    "not-an-address;Broken;subscribed;Nowhere\r\n"  # 4 invalid
    "\r\n"  # 5 empty
    'bob@example.com;"Bob; Jr.";unsubscribed;Oslo\r\n'  # 6 unsubscribed
    'cy@example.org;"Cy\r\nSplit";;"Rome"\r\n'  # 7-8 (quoted CRLF)
    "jörg@example.com;Jörg;subscribed;Berlin\r\n"  # 9 non-ASCII local part
    "user@bücher.example;Büch;subscribed;Bonn\r\n"  # 10 IDN
    ";;;\r\n"  # 11 empty
    ";Nameless;subscribed;\r\n"  # 12 no address
    "cy@example.org;Cy again;;Rome\r\n"  # 13 duplicate of 7
    '"eve@example.org";"Eve\nBcc: x";subscribed;"Lyon"\r\n'  # 14-15
)
MESSY_VALID = [
    ("ann@example.org", "Ann Example", 2),
    ("cy@example.org", "Cy Split", 7),
    ("user@xn--bcher-kva.example", "Büch", 10),
    ("eve@example.org", "Eve Bcc: x", 14),
]
MESSY_SKIPPED = {
    3: "duplicate",
    4: "invalid address",
    5: "empty row",
    6: "unsubscribed",
    9: "invalid address",
    11: "empty row",
    12: "no email address",
    13: "duplicate",
}


@pytest.fixture
def messy(write_file: WriteFile) -> Path:
    return write_csv(write_file, MESSY, name="messy.csv")


def test_messy_list_yields_valid_rows_in_order(messy: Path) -> None:
    items = read(messy)
    assert [(s.email, s.name, s.line) for s in valid(items)] == MESSY_VALID


def test_every_skipped_row_is_reported_exactly_once(messy: Path) -> None:
    stats = SubscriberList(messy).scan()
    lines = [s.line for s in stats.skipped]
    assert lines == sorted(MESSY_SKIPPED)  # file order, no repeats, nothing missing
    for row in stats.skipped:
        assert row.reason.startswith(MESSY_SKIPPED[row.line]), row
        assert "\n" not in row.reason
        assert "\r" not in row.reason
    assert stats.valid == len(MESSY_VALID)


def test_each_pass_rereads_the_file_and_agrees(messy: Path) -> None:
    subscribers = SubscriberList(messy)
    first, second = list(subscribers), list(subscribers)
    assert first == second
    assert subscribers.scan() == subscribers.scan()
    assert len(first) == len(MESSY_VALID) + len(MESSY_SKIPPED)


def test_the_shipped_example_list() -> None:
    items = read(EXAMPLE_SUBSCRIBERS)
    assert [s.email for s in valid(items)] == [
        "ada@example.org",
        "grace@example.com",
        "katherine@example.com",
        "hedy@example.org",
        "leila@example.com",
    ]
    assert [s.line for s in skipped(items)] == [4, 5, 6]
    assert valid(items)[2].name == "Johnson, Katherine"
    assert valid(items)[4].name == "Leïla Sadri"


# --- Streaming ------------------------------------------------------------------------------

BIG_ROWS = 200_000


def test_iterating_a_large_list_does_not_hold_its_rows(tmp_path: Path) -> None:
    """200k rows stream through with memory for the de-duplication digests only.

    Live allocations (``sys.getallocatedblocks``; tracemalloc would take ~10x longer) are
    sampled while iterating.
    One row in eight is a valid unique address (each adds its digest to the duplicate check);
    the rest are unsubscribed rows that are parsed and dropped.
    """
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,status,city\n")
        handle.writelines(
            f"user{i}@example.org,User Number {i},"
            f"{'subscribed' if i % 8 == 0 else 'unsubscribed'},City {i % 97}\n"
            for i in range(BIG_ROWS)
        )
    subscribers = SubscriberList(path)
    base = sys.getallocatedblocks()
    peak = count = mailed = 0
    for count, item in enumerate(subscribers, start=1):
        mailed += isinstance(item, Subscriber)
        if count % 5000 == 0:
            peak = max(peak, sys.getallocatedblocks() - base)

    assert count == BIG_ROWS
    assert mailed == BIG_ROWS // 8
    # What stays alive is the de-duplication state: about two blocks (a digest and a line
    # number) per unique valid address, nothing per row; a list of dicts would hold ~6 per row.
    assert peak < 3 * mailed + 5000, (peak, mailed)
    # (speed is measured in benchmarks/, not asserted here: the machine is shared)


def test_rows_are_read_lazily(tmp_path: Path) -> None:
    """Rows appended after iteration started are still seen: the file is read as it goes."""
    path = tmp_path / "growing.csv"
    rows = 5000  # well past the first read buffer and the 64 KiB header sample
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name\n")
        handle.writelines(f"user{i}@example.org,User {i}\n" for i in range(rows))
    iterator = iter(SubscriberList(path))
    first = next(iterator)
    assert isinstance(first, Subscriber)
    assert first.line == 2
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write("late@example.org,Late Comer\n")
    rest = list(iterator)
    assert len(rest) == rows
    assert isinstance(rest[-1], Subscriber)
    assert (rest[-1].email, rest[-1].line) == ("late@example.org", rows + 2)


@pytest.mark.parametrize(
    ("header", "value", "mailed"),
    [
        ("Status", "Hard Bounce", False),
        ("Status", "Do Not Email", False),
        ("Status", "archived", False),
        ("Status", "spam", False),
        ("Status", "Non-subscribed", False),
        ("Status", "Confirmed", True),
        ("Subscription Status", "Active", True),
        ("Statut", "unsubscribed", False),
        ("Email Opt Out", "1", False),
        ("Email Opt Out", "0", True),
        ("Subscribed", "FALSE", False),
        ("Subscribed", "TRUE", True),
    ],
)
def test_status_and_flag_columns_mail_only_clear_subscribers(
    write_file: WriteFile, header: str, value: str, mailed: bool
) -> None:
    """A status is an allow-list: a value that does not clearly mean "subscribed" is skipped."""
    text = f"email,{header}\nann@example.org,{value}\nbob@example.com,\n"
    items = read(write_csv(write_file, text))
    assert [s.email for s in valid(items)] == (
        ["ann@example.org", "bob@example.com"] if mailed else ["bob@example.com"]
    )
    if not mailed:
        (row,) = skipped(items)
        assert row.line == 2
        assert value in row.reason


@pytest.mark.parametrize(
    "value", ["no", "0", "false", "FALSE", "stop", "STOP", "unsub", "DNC", "disabled", "banned", "left",
              "abgemeldet", "Cancelled"],
)  # fmt: skip
def test_a_status_column_of_refusals_alone_mails_nobody(write_file: WriteFile, value: str) -> None:
    """Every row says not to mail, and none says "subscribed": the column is still a status
    column (whether a reader is mailed never depends on what the other rows say)."""
    items = read(
        write_csv(
            write_file, f"email,name,status\nann@example.org,Ann,{value}\nbob@example.com,Bob,{value}\n"
        )
    )
    assert valid(items) == []
    assert [row.line for row in skipped(items)] == [2, 3]


@pytest.mark.parametrize("header", ["Bounced", "Do Not Contact", "DNC", "Complained", "Email Bounced"])
@pytest.mark.parametrize("value", ["yes", "1", "TRUE"])
def test_a_yes_no_column_that_says_bounced_or_do_not_contact_is_honoured(
    write_file: WriteFile, header: str, value: str
) -> None:
    items = read(write_csv(write_file, f"email,{header}\nann@example.org,{value}\nbob@example.com,no\n"))
    assert [s.email for s in valid(items)] == ["bob@example.com"]
    (row,) = skipped(items)
    assert row.line == 2


@pytest.mark.parametrize(
    ("header", "values"),
    [("State", ["TX", "MA"]), ("Status", ["Paid", "Lifetime"]), ("Member Status", ["Paid", "Lifetime"])],
)
def test_columns_that_are_not_subscription_statuses_do_not_decide_who_is_mailed(
    write_file: WriteFile, header: str, values: list[str]
) -> None:
    text = f"email,{header}\nann@example.org,{values[0]}\nbob@example.com,{values[1]}\n"
    path = write_csv(write_file, text)
    subscribers = SubscriberList(path)
    assert [s.email for s in valid(list(subscribers))] == ["ann@example.org", "bob@example.com"]
    if header == "Status":  # named like a status, so the list says why it was not used
        assert any("holds no subscription statuses" in note for note in subscribers.notes)
