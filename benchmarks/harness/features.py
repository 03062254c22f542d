"""Sections 5–7: what one feature costs, the same send with it and without it, side by side.

5. the journal, through the library (``plan_issue`` once, then ``run_send`` with a ``Journal``
   and with ``None``, the test-send path);
6. DKIM signing, through ``dispatch send``: one RSA signature, and RSA with a second Ed25519 one
   (each reports "not available yet" until sends are signed so);
7. suppression: ``dispatch suppress import`` of a large export, and a send against a store that
   holds it vs an empty one (reports "not available yet" until the command exists)."""

from __future__ import annotations

import base64
import gc
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from harness.fixtures import list_addresses, write_dkim_key, write_suppressions
from harness.procs import SmtpSink, run_measured
from harness.report import Target
from harness.runner import Bench, rotated, settings_mapping

JOURNAL_COST = Target("<=", 15, "≤ 15 %")
NOT_SLOWER = Target("<=", 1.05, "≤ 1.05× (not measurably slower)")
DKIM_COST = Target("<=", 20, "≤ 20 % (a signed send ≥ 80 % of the unsigned rate, issue 17)")
DKIM_SELECTOR = "bench"
DKIM_DOMAIN = "example.org"


def bench_journal(b: Bench) -> None:
    # Imported here: the one section that drives the library, so an API change breaks only it.
    from dispatch import SendOptions, Settings, plan_issue, run_send  # noqa: PLC0415
    from dispatch.state.journal import Journal  # noqa: PLC0415

    n = b.cfg.recipients
    rows = {
        "journal": b.report.row("5", "run_send with a Journal, 1 connection", chart="library"),
        "none": b.report.row(
            "5", "run_send without a journal (the test-send path), 1 connection", chart="library"
        ),
    }
    with SmtpSink(b.run) as sink:
        # its own state folder: with none named, the library would keep premailer's cache under $HOME
        named = settings_mapping(DISPATCH_SMTP_PORT=str(sink.port), DISPATCH_STATE_DIR=str(b.fresh_state()))
        settings = Settings.from_mapping(named)
        issue = plan_issue(b.article, b.send_list, settings)

        def once(name: str) -> None:
            state = b.fresh_state()
            journal = Journal(state) if name == "journal" else None
            gc.collect()
            before = sink.messages()
            start, cpu = time.perf_counter(), time.process_time()
            try:
                summary = run_send(issue, journal, SendOptions())
            finally:
                spent, cpu_spent = time.perf_counter() - start, time.process_time() - cpu
                if journal is not None:
                    journal.close()
                shutil.rmtree(state, ignore_errors=True)
            if summary.sent_now != n or int(summary.exit_code) != 0:
                raise RuntimeError(f"run_send ({name}): {summary.as_json()}")
            sink.expect(before, n, f"run_send ({name})")
            rows[name].add(n / spent, cpu_ms=cpu_spent / n * 1e3)

        rounds = 2 * b.cfg.rounds  # cheap rounds (no process start-up), and the journal is noisy
        for r in range(rounds):
            for name in rotated(list(rows), r):
                once(name)
    b.report.cost(
        "5", "journal cost (1 − with / without)", rows["journal"], rows["none"], target=JOURNAL_COST
    )
    b.report.notes.append(
        f"5: in this process: `plan_issue` once, then `run_send(issue, Journal(fresh folder) or None, "
        f"SendOptions())` into smtp-sink, {n:,} recipients, {2 * b.cfg.rounds} interleaved rounds; CPU per "
        "msg is this process's (time.process_time)."
    )


def _dkim_record(key_file: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    public = load_pem_private_key(key_file.read_bytes(), password=None).public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _verifies(message: bytes, records: dict[bytes, bytes]) -> bool:
    """Every DKIM-Signature of the message verifies with dkimpy against the keys' records."""
    import dkim  # noqa: PLC0415 - dkimpy, one of dispatch's dependencies

    count = message.split(b"\r\n\r\n", 1)[0].count(b"DKIM-Signature:")
    checker = dkim.DKIM(message)
    dns = lambda name, timeout=5: records[name]  # noqa: E731
    try:
        return count > 0 and all(checker.verify(idx=i, dnsfunc=dns) for i in range(count))
    except dkim.DKIMException:
        return False


def _dkim_variants(b: Bench) -> tuple[dict[str, dict[str, str]], dict[bytes, bytes]]:
    """The settings of each signed variant (one RSA signature; RSA and a second Ed25519 one)
    and the TXT records dkimpy is given for their selectors."""
    keys = {"rsa": b.run / "dkim-bench.pem", "ed25519": b.run / "dkim-bench-ed.pem"}
    for algorithm, path in keys.items():
        write_dkim_key(path, algorithm=algorithm)
    rsa = {
        "DISPATCH_DKIM_KEY_FILE": str(keys["rsa"]),
        "DISPATCH_DKIM_SELECTOR": DKIM_SELECTOR,
        "DISPATCH_DKIM_DOMAIN": DKIM_DOMAIN,
    }
    both = {
        **rsa,
        "DISPATCH_DKIM_ED25519_KEY_FILE": str(keys["ed25519"]),
        "DISPATCH_DKIM_ED25519_SELECTOR": "bench-ed",
    }
    records = {
        f"{selector}._domainkey.{DKIM_DOMAIN}.".encode(): _dkim_record(keys[algorithm])
        for selector, algorithm in ((DKIM_SELECTOR, "rsa"), ("bench-ed", "ed25519"))
    }
    return {"dkim": rsa, "dkim2": both}, records


def _dkim_available(b: Bench, label: str, settings: dict[str, str], records: dict[bytes, bytes]) -> str:
    """Why this signed send cannot be measured ("" when it can): its settings refused while the
    same send without them works, or messages not signed; a signature dkimpy rejects fails."""
    try:
        got = b.capture([lambda port: b.cli_send(port, subscribers=b.one_list, extra=settings, expect=1)])
    except RuntimeError as err:
        # Not available yet only if the same send without DKIM works; otherwise the section fails.
        b.capture([lambda port: b.cli_send(port, subscribers=b.one_list, expect=1)])
        return f"not available yet: the DKIM settings were refused ({err})"
    if b"\nDKIM-Signature:" not in b"\n" + got[0]:
        return "not available yet: the DKIM settings are accepted, but messages are not signed"
    if not _verifies(got[0], records):
        raise RuntimeError(f"{label}: a captured message did NOT verify with dkimpy")
    return ""


def bench_dkim(b: Bench) -> None:
    labels = {
        "dkim": "dispatch send with DKIM (rsa-sha256, 2048-bit key), 1 connection",
        "dkim2": "dispatch send with DKIM, RSA and a second Ed25519 signature, 1 connection",
    }
    variants, records = _dkim_variants(b)
    missing = {name: _dkim_available(b, labels[name], variants[name], records) for name in labels}
    for name, why in missing.items():
        if why:
            b.report.missing("6", labels[name], why)
    measured = [name for name in labels if not missing[name]]
    if not measured:
        return
    n = b.cfg.recipients
    rows = {
        name: b.report.row("6", labels[name], chart="send: smtp-sink" if name == "dkim" else "")
        for name in measured
    }
    rows["plain"] = b.report.row("6", "dispatch send without DKIM, 1 connection")
    with SmtpSink(b.run) as sink:
        for r in range(b.cfg.rounds):
            for name in rotated(list(rows), r):
                before = sink.messages()
                got, _ = b.cli_send(sink.port, extra=variants.get(name))
                sink.expect(before, n, f"dispatch send ({name})")
                rows[name].add(n / got.wall, cpu_ms=got.cpu / n * 1e3, rss_mb=got.rss_mb)
    extra = []
    for name in measured:
        what = "RSA" if name == "dkim" else "RSA + Ed25519"
        b.report.cost(
            "6", f"DKIM cost, {what} (1 − with / without)", rows[name], rows["plain"], target=DKIM_COST
        )
        cpu = statistics.median(rows[name].cpu_ms) - statistics.median(rows["plain"].cpu_ms)
        extra.append(f"{what} adds {cpu:.2f} ms CPU per message (median difference)")
    b.report.notes.append(
        "6: DISPATCH_DKIM_KEY_FILE (a fresh 2048-bit RSA key made with cryptography), "
        f"SELECTOR={DKIM_SELECTOR}, DOMAIN={DKIM_DOMAIN}; the second signature adds "
        "DISPATCH_DKIM_ED25519_KEY_FILE (a fresh Ed25519 key), SELECTOR=bench-ed; "
        f"{b.cfg.rounds} interleaved rounds of {n:,} recipients into smtp-sink, journal on. A captured "
        "message of each signed variant verified with dkimpy (every signature) against the keys' public "
        f"halves. {'; '.join(extra)}. A real receiver's verdict (OpenDKIM behind Postfix, "
        "Authentication-Results) is tests/test_dkim_opendkim.py."
    )


def _suppress_available(b: Bench) -> str:
    done = subprocess.run(
        [*b.dispatch, "suppress", "import", "--help"], capture_output=True, env=b.env(), check=False
    )
    return "" if done.returncode == 0 else "not available yet: `dispatch suppress import` does not exist"


def bench_suppression(b: Bench) -> None:
    n, count = b.cfg.recipients, b.cfg.suppressed
    why = _suppress_available(b)
    if why:
        b.report.missing("7", f"`dispatch suppress import`, {count:,} rows", why)
        b.report.missing("7", "send with a large suppression store vs none (per-message cost)", why)
        return
    overlap = max(1, n // 100)
    export = b.run / f"suppressions-{count}.csv"
    write_suppressions(export, count, list_addresses(b.send_list, overlap))
    imports = b.report.row("7", f"`dispatch suppress import`, {count:,} rows", unit="s", digits=2)
    template: Path | None = None
    for _ in range(b.cfg.import_runs):
        template = b.fresh_state()
        cmd = [
            *b.dispatch,
            "suppress",
            "import",
            str(export),
            "--reason",
            "manual",
            "--env-file",
            str(b.env_file),
        ]
        measured = run_measured(cmd, env=b.env(DISPATCH_STATE_DIR=str(template)), cwd=b.run)
        measured.check("dispatch suppress import")
        imports.add(measured.wall, rss_mb=measured.rss_mb)
    assert template is not None
    rows = {
        "store": b.report.row("7", f"dispatch send, {count:,} addresses suppressed", unit="ms/msg", digits=3),
        "none": b.report.row("7", "dispatch send, nothing suppressed", unit="ms/msg", digits=3),
    }
    seen: dict[str, set[int]] = {"store": set(), "none": set()}
    reported: set[object] = set()
    with SmtpSink(b.run) as sink:
        for r in range(b.cfg.rounds):
            for name in rotated(list(rows), r):
                state = b.fresh_state()
                if name == "store":
                    shutil.rmtree(state)
                    shutil.copytree(template, state)
                before = sink.messages()
                measured, summary = b.cli_send(sink.port, state=state, check=False)
                sent = int(summary["sent_now"])
                sink.expect(before, sent, f"dispatch send ({name})")
                seen[name].add(n - sent)
                if name == "store":
                    reported.add(summary.get("suppressed"))
                rows[name].add(
                    measured.wall / sent * 1e3, cpu_ms=measured.cpu / sent * 1e3, rss_mb=measured.rss_mb
                )
    expected = seen["store"] == {overlap}
    b.report.ratio(
        "7", "per-message cost, suppressed store / none", rows["store"], rows["none"], target=NOT_SLOWER,
        note="" if expected else f"**the store did not suppress the {overlap} list members it holds**",
    )  # fmt: skip
    b.report.notes.append(
        f"7: the export has {count:,} addresses ({overlap} of them on the {n:,}-recipient list; header "
        "`Email Address`, imported with `--reason manual`: every list); import into a fresh state "
        f"folder, {b.cfg.import_runs} run(s). Sends: "
        f"{b.cfg.rounds} interleaved rounds, each in a copy of the imported state folder or an empty one; "
        f"recipients not sent: {sorted(seen['store'])} with the store (expected {overlap}), "
        f"{sorted(seen['none'])} without (the summary's `suppressed`: {sorted(map(str, reported))}). "
        "Cost per message = wall / messages sent."
    )
