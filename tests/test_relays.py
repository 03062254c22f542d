"""Several relays for one send (issue 16): DISPATCH_SMTP_HOST as a list with per-relay settings;
recipients spread across real aiosmtpd relays on 127.0.0.1; a relay that dies mid-run leaves
its share to the others, and every recipient gets the issue exactly once (counted at the
relays themselves)."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch.errors import ConfigError
from dispatch.settings import Settings
from tests.conftest import BASE_ENV
from tests.smtp_servers import PASSWORD, USER, FaultPlan, Handler, Server, free_port, start_server

Invoke = Callable[..., Any]
Start = Callable[..., list[Server]]
EnvFile = Callable[..., Path]


# --------------------------------------------------------------------------- settings


def settings(**values: str) -> Settings:
    return Settings.from_mapping({**BASE_ENV, **{f"DISPATCH_{k}": v for k, v in values.items()}})


def test_one_relay_is_read_as_before() -> None:
    one = settings(SMTP_HOST="smtp.example.org", SMTP_PASSWORD="pa,ss=")

    assert one.relays == (one,)
    assert (one.smtp_host, one.smtp_port, one.endpoint) == ("smtp.example.org", 587, "smtp.example.org:587")
    assert one.smtp_password == "pa,ss=", "one relay's password is taken as written, commas and all"


def test_each_relay_gets_its_own_settings_one_value_for_all_or_one_each() -> None:
    s = settings(
        SMTP_HOST="relay-a.example.org:587, relay-b.example.org:2525,[2001:db8::25]",
        SMTP_SECURITY="starttls,ssl,none", SMTP_PORT="", SMTP_USER="news@example.org,,news-c",
        SMTP_PASSWORD="pw,a\n\npw-c", CONNECTIONS="4", MAX_PER_CONNECTION="100,,7", SMTP_TIMEOUT="10",
    )  # fmt: skip

    relays = [(r.smtp_host, r.smtp_port, r.smtp_security, r.smtp_user, r.smtp_password, r.connections,
               r.max_per_connection, r.smtp_timeout) for r in s.relays]  # fmt: skip
    assert relays == [
        ("relay-a.example.org", 587, "starttls", "news@example.org", "pw,a", 4, 100, 10.0),
        ("relay-b.example.org", 2525, "ssl", "", "", 4, 0, 10.0),
        ("2001:db8::25", 25, "none", "news-c", "pw-c", 4, 7, 10.0),
    ]
    assert s.endpoint == "relay-a.example.org:587, relay-b.example.org:2525, 2001:db8::25:25"
    assert "pw,a" not in repr(s)
    assert "pw-c" not in repr(s)
    assert all(not r.per_relay for r in s.relays)


@pytest.mark.parametrize(
    ("values", "words"),
    [({"SMTP_HOST": "a.example.org,b.example.org", "CONNECTIONS": "1,2,3"}, "DISPATCH_CONNECTIONS: gives 3"),
     ({"SMTP_HOST": "a.example.org", "SMTP_SECURITY": "ssl,none"}, "DISPATCH_SMTP_SECURITY: gives 2"),
     ({"SMTP_HOST": "a.example.org:25,a.example.org:25"}, "names the relay a.example.org:25 twice"),
     ({"SMTP_HOST": "a.example.org,,b.example.org"}, "an empty place between commas"),
     ({"SMTP_HOST": "a.example.org:99999"}, "the port must be a number"),
     ({"SMTP_HOST": "a.example.org;b.example.org"}, "is not a relay"),
     ({"SMTP_HOST": "a.example.org,b.example.org", "SMTP_SECURITY": "starttls,tls"}, "'tls' is not one of"),
     ({"SMTP_HOST": ",".join(f"r{n}.example.org" for n in range(17))}, "at most 16")],
    ids=["too-many-values", "values-for-one-relay", "twice", "empty-place", "bad-port", "semicolon",
         "bad-security", "too-many-relays"],
)  # fmt: skip
def test_relay_settings_that_do_not_fit_are_one_error_naming_the_setting(
    values: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_") as raised:
        settings(**values)
    assert words in str(raised.value)


def test_relative_ca_files_are_taken_from_the_settings_file_folder_for_each_relay(
    tmp_path: Path, ca_file: str, invoke: Invoke, article: Path
) -> None:
    (tmp_path / "cas").mkdir()
    for name in ("a.pem", "b.pem"):
        (tmp_path / "cas" / name).write_bytes(Path(ca_file).read_bytes())
    env = tmp_path / "relays.env"
    env.write_text(
        "".join(f"{k}='{v}'\n" for k, v in BASE_ENV.items())
        + f"DISPATCH_STATE_DIR={tmp_path / 'state'}\nDISPATCH_SMTP_HOST=a.example.org,b.example.org\n"
        "DISPATCH_SMTP_CA_FILE=cas/a.pem,cas/b.pem\n",
        encoding="utf-8",
    )

    result = invoke("check", article, "--env-file", env, "--json")

    assert "Traceback" not in result.output
    assert "SMTP_CA_FILE" not in result.output, "each relay's CA file was found next to the settings file"


# --------------------------------------------------------------------------- sending


class Relay(Handler):
    """A relay that takes its time over each message and, once told to die (or after
    ``die_after`` messages), drops every connection: at EHLO (new ones) and at RCPT (open ones,
    before any data: unambiguously not taken)."""

    def __init__(self, delay: float = 0.005, die_after: int = 0, faults: FaultPlan | None = None) -> None:
        super().__init__(faults)
        self.delay = delay
        self.die_after = die_after
        self.dead = False

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> Any:
        if self.dead:
            server.transport.abort()
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.dead:
            server.transport.abort()
            return "421 4.3.2 going down"
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        self.dead = self.dead or bool(self.die_after and len(self.received) >= self.die_after)
        return reply


@pytest.fixture
def relays(smtp_server: Callable[..., Server]) -> Callable[..., list[Server]]:
    def start(*handlers: Relay) -> list[Server]:
        return [smtp_server(handler=handler) for handler in handlers]

    return start


def address(n: int) -> str:
    return f"reader{n:03d}@example.{'org' if n % 2 else 'com'}"


def readers(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "readers.csv"
    rows = "".join(f"{address(n)},Reader {n}\n" for n in range(count))
    path.write_text("email,name\n" + rows, encoding="utf-8")
    return path


def relay_env(servers: list[Server], connections: str = "2", **more: str) -> dict[str, str]:
    return {
        "DISPATCH_SMTP_HOST": ",".join(f"127.0.0.1:{s.port}" for s in servers),
        "DISPATCH_SMTP_SECURITY": "none", "DISPATCH_CONNECTIONS": connections, "DISPATCH_SMTP_TIMEOUT": "10",
        **more,
    }  # fmt: skip


def delivered(servers: list[Server]) -> Counter[str]:
    return Counter(r for s in servers for message in list(s.received) for r in message.rcpt_tos)


def send(invoke: Invoke, article: Path, csv: Path, env: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = invoke(
        "send", article, "-s", csv, "--env-file", env, "--campaign", "relays", "--yes", "--json", *extra
    )
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_recipients_are_spread_across_relays_each_exactly_once(
    relays: Callable[..., list[Server]],
    invoke: Invoke,
    article: Path,
    tmp_path: Path,
    env_file: Callable[..., Path],
) -> None:
    servers = relays(Relay(), Relay(), Relay())
    csv = readers(tmp_path, 90)

    code, data, text = send(invoke, article, csv, env_file(**relay_env(servers)))

    assert (code, data["sent"], data["unknown"]) == (0, 90, 0)
    assert delivered(servers) == Counter(
        {f"reader{n:03d}@example.{'org' if n % 2 else 'com'}": 1 for n in range(90)}
    )
    assert all(len(s.received) >= 5 for s in servers), [len(s.received) for s in servers]
    by_relay = {r["relay"]: r["sent"] for r in data["relays"]}
    assert by_relay == {f"127.0.0.1:{s.port}": len(s.received) for s in servers}
    assert all(r["given_up"] is None and r["connections"] == 2 for r in data["relays"])
    assert text.count("  Relay:         127.0.0.1:") == 3


@pytest.mark.parametrize("connections", ["1", "3"])
def test_a_relay_that_stops_answering_mid_run_leaves_its_share_to_the_others(
    relays: Start, invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile, connections: str,
) -> None:  # fmt: skip
    servers = relays(Relay(), Relay(die_after=8), Relay())
    csv = readers(tmp_path, 120)

    code, data, text = send(invoke, article, csv, env_file(**relay_env(servers, connections)))

    counts = delivered(servers)
    assert (code, data["sent"], data["unknown"], data["deferred"]) == (0, 120, 0, 0), text
    assert counts == Counter(address(n) for n in range(120)), "every reader exactly once, across the relays"
    dying = next(r for r in data["relays"] if r["relay"] == f"127.0.0.1:{servers[1].port}")
    assert dying["given_up"] is not None
    assert "stopped answering" in dying["given_up"]
    assert dying["sent"] == len(servers[1].received) >= 8
    assert sum(r["sent"] for r in data["relays"]) == 120
    assert "given up: stopped answering" in text


def test_a_relay_stopped_outright_mid_run_never_causes_a_second_copy(
    relays: Callable[..., list[Server]],
    invoke: Invoke,
    article: Path,
    tmp_path: Path,
    env_file: Callable[..., Path],
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    """The relay process goes away with whatever it was doing: a message it had read may stay
    unknown, never resent; everyone else is delivered once, by the relay that is left."""
    servers = [*relays(Relay(delay=0.01)), start_server(handler=Relay(delay=0.01))]
    csv = readers(tmp_path, 150)
    settings_file = env_file(**relay_env(servers, "2"))
    args = ["send", article, "-s", csv, "--env-file", settings_file, "--campaign", "relays", "--yes"]
    proc = spawn(*args, "--json")
    deadline = time.monotonic() + 30
    while len(servers[1].received) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    servers[1].stop()  # the relay goes away, with whatever it was doing
    out, err = proc.communicate(timeout=120)
    data = json.loads(out)

    counts = delivered(servers)
    assert max(counts.values()) == 1, "nobody got two copies"
    assert data["sent"] + data["unknown"] == 150, err
    assert data["sent"] <= sum(counts.values()) <= data["sent"] + data["unknown"]
    assert data["exit_code"] == (1 if data["unknown"] else 0), err
    assert data["relays"][1]["given_up"] is not None


def test_a_relay_down_from_the_start_is_left_out_with_a_warning(
    relays: Callable[..., list[Server]],
    invoke: Invoke,
    article: Path,
    tmp_path: Path,
    env_file: Callable[..., Path],
) -> None:
    (live,) = relays(Relay())
    closed = free_port()
    env = relay_env([live], "2", DISPATCH_SMTP_HOST=f"127.0.0.1:{closed},127.0.0.1:{live.port}")

    code, data, _text = send(invoke, article, readers(tmp_path, 20), env_file(**env))

    assert (code, data["sent"]) == (0, 20)
    assert len(live.received) == 20
    down = data["relays"][0]
    assert down["relay"] == f"127.0.0.1:{closed}"
    assert "unreachable at the start" in down["given_up"]
    assert any(f"relay 127.0.0.1:{closed} was left out" in w for w in data["warnings"])


def test_no_relay_left_stops_the_run_before_the_first_message(
    invoke: Invoke, article: Path, tmp_path: Path, env_file: Callable[..., Path]
) -> None:
    env = relay_env([], "1", DISPATCH_SMTP_HOST=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")

    result = invoke("send", article, "-s", readers(tmp_path, 5), "--env-file", env_file(**env), "--yes")

    assert result.exit_code == 3, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("dispatch: error: SMTP server 127.0.0.1:")
    assert not (tmp_path / "state" / "journal.sqlite3").exists() or "sent" not in result.stdout


def test_a_relay_over_its_quota_is_given_up_and_the_others_carry_on(
    relays: Callable[..., list[Server]],
    invoke: Invoke,
    article: Path,
    tmp_path: Path,
    env_file: Callable[..., Path],
) -> None:
    csv = readers(tmp_path, 40)
    quota = {address(n): "421 4.7.0 Too many messages, slow down" for n in range(40)}
    servers = relays(Relay(faults=FaultPlan(reject=quota)), Relay())

    code, data, _ = send(invoke, article, csv, env_file(**relay_env(servers, "1")))

    assert (code, data["sent"], data["deferred"]) == (0, 40, 0)
    assert len(servers[0].received) == 0
    assert len(servers[1].received) == 40
    assert "asked to stop" in data["relays"][0]["given_up"]


def test_each_relay_uses_its_own_tls_and_login(
    smtp_server: Callable[..., Server], server_tls: ssl.SSLContext, ca_file: str, invoke: Invoke,
    article: Path, tmp_path: Path, env_file: EnvFile,
) -> None:  # fmt: skip
    secure = smtp_server(tls=server_tls, ca_file=ca_file, auth=True)
    plain = smtp_server()
    env = {
        "DISPATCH_SMTP_HOST": f"127.0.0.1:{secure.port},127.0.0.1:{plain.port}",
        "DISPATCH_SMTP_SECURITY": "starttls,none", "DISPATCH_SMTP_CA_FILE": f"{ca_file},",
        "DISPATCH_SMTP_USER": f"{USER},", "DISPATCH_SMTP_PASSWORD": f"{PASSWORD}\n",
        "DISPATCH_CONNECTIONS": "2",
    }  # fmt: skip

    code, data, text = send(invoke, article, readers(tmp_path, 30), env_file(**env))

    assert (code, data["sent"]) == (0, 30), text
    assert len(secure.received) > 0
    assert len(plain.received) > 0
    assert delivered([secure, plain]) == Counter(address(n) for n in range(30))
    assert PASSWORD not in text


def test_sigkill_with_several_relays_then_rerun_never_sends_twice(
    relays: Start, invoke: Invoke, article: Path, tmp_path: Path, env_file: EnvFile,
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:  # fmt: skip
    servers = relays(Relay(delay=0.01), Relay(delay=0.01), Relay(delay=0.01, die_after=30))
    csv = readers(tmp_path, 150)
    env = env_file(**relay_env(servers, "2"))
    args = ["send", article, "-s", csv, "--env-file", env, "--campaign", "relays", "--yes", "--json"]
    for threshold in (25, 70):
        proc = spawn(*args)
        while sum(len(s.received) for s in servers) < threshold and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert max(delivered(servers).values()) == 1

    code, data, _ = send(invoke, article, csv, env)
    counts = delivered(servers)
    assert max(counts.values()) == 1, "nobody got two copies"
    assert data["sent"] + data["unknown"] == 150
    assert data["unknown"] <= 2 * 6, "at most one per connection per kill"
    assert code == (1 if data["unknown"] else 0)
