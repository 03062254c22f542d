"""dispatch.unsubscribe.serve: the one-click unsubscribe endpoint (issue 7, RFC 8058), in a real waitress
server on 127.0.0.1, spoken to over HTTP with http.client; the store is checked as a send
would check it."""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dispatch.errors import ConfigError
from dispatch.state.suppression import SuppressionStore
from dispatch.unsubscribe.serve import MAX_BODY, MAX_URL, ServeConfig, mask
from tests.serve_helpers import (
    FORM,
    NEWS,
    ONE_CLICK,
    OTHER,
    PATH_URL,
    QUERY_URL,
    SECRET,
    Endpoint,
    Reply,
    running,
)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Endpoint]]:
    """Start the app in a real waitress server on a free port of 127.0.0.1."""
    with contextlib.ExitStack() as servers:

        def run(url_template: str = PATH_URL) -> Endpoint:
            return servers.enter_context(running(tmp_path / "state", url_template))

        yield run


@pytest.fixture
def endpoint(start: Callable[..., Endpoint]) -> Endpoint:
    return start()


def assert_safe_headers(reply: Reply) -> None:
    headers = reply.headers
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert "set-cookie" not in headers
    assert "location" not in headers


# --- RFC 8058 one-click ----------------------------------------------------------------------


def test_one_click_post_unsubscribes_from_that_list_only(endpoint: Endpoint) -> None:
    reply = endpoint.one_click("Ann@Example.org")
    assert reply.status == 200
    assert_safe_headers(reply)
    with endpoint.store() as store:
        entry = store.lookup("ann@example.org", NEWS)
        assert entry is not None
        assert (entry.reason, entry.scope, entry.source) == ("unsubscribed", NEWS, "serve")
        assert store.lookup("ann@example.org", OTHER) is None
        assert store.lookup("bob@example.org", NEWS) is None


def test_repeating_the_post_is_harmless(endpoint: Endpoint) -> None:
    for _ in range(3):
        assert endpoint.one_click("ann@example.org").status == 200
    with endpoint.store() as store:
        assert store.count() == 1


def test_multipart_and_chunked_one_click_posts(endpoint: Endpoint) -> None:
    body = '--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--XyZ--\r\n'
    reply = endpoint.request(
        "POST", endpoint.target("ann@example.org"), body, Content_Type="multipart/form-data; boundary=XyZ"
    )
    assert reply.status == 200
    conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    conn.request("POST", endpoint.target("bob@example.org"), body=iter([ONE_CLICK.encode()]), headers=FORM,
                 encode_chunked=True)  # fmt: skip
    assert conn.getresponse().status == 200
    conn.close()
    with endpoint.store() as store:
        assert store.lookup("ann@example.org", NEWS) is not None
        assert store.lookup("bob@example.org", NEWS) is not None


def test_the_send_side_reader_sees_the_unsubscribe_at_once(endpoint: Endpoint) -> None:
    with endpoint.store() as reader:  # a send's reader, open before the POST
        assert reader.lookup("ann@example.org", NEWS) is None
        assert endpoint.one_click("ann@example.org").status == 200
        assert reader.lookup("ann@example.org", NEWS) is not None


def test_concurrent_posts_for_the_same_and_different_addresses(endpoint: Endpoint) -> None:
    addresses = [f"reader{n}@example.org" for n in range(10)] * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda a: endpoint.one_click(a).status, addresses))
    assert statuses == [200] * len(addresses)
    with endpoint.store() as store:
        assert store.count() == 10


# --- The pages -----------------------------------------------------------------------------


def test_get_shows_a_form_and_suppresses_nothing(endpoint: Endpoint) -> None:
    reply = endpoint.request("GET", endpoint.target("ann@example.org"))
    assert reply.status == 200
    assert_safe_headers(reply)
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    page = reply.text
    assert '<html lang="en">' in page
    assert "<title>Unsubscribe from The Weekly?</title>" in page
    assert "Example Foundation" in page
    assert "a\u2022\u2022\u2022@example.org" in page
    assert "ann@example.org" not in page
    button = r'<button type="submit" name="List-Unsubscribe" value="One-Click"[^>]*>Unsubscribe</button>'
    assert re.search(f'<form method="post">{button}</form>', page)
    assert "<script" not in page
    assert "http" not in page.replace("http-equiv", "")  # nothing loaded from anywhere
    with endpoint.store() as store:
        assert store.lookup("ann@example.org", NEWS) is None


def test_head_answers_like_get_without_a_body(endpoint: Endpoint) -> None:
    get = endpoint.request("GET", endpoint.target("ann@example.org"))
    head = endpoint.request("HEAD", endpoint.target("ann@example.org"))
    assert (head.status, head.text) == (200, "")
    assert head.headers["content-length"] == get.headers["content-length"]
    assert_safe_headers(head)


def test_form_post_then_undo(endpoint: Endpoint) -> None:
    target = endpoint.target("ann@example.org")
    done = endpoint.request("POST", target, ONE_CLICK, **FORM)
    assert done.status == 200
    assert "You are unsubscribed" in done.text
    assert 'name="action" value="resubscribe"' in done.text
    assert "You are unsubscribed" in endpoint.request("GET", target).text  # the undo stays reachable
    undone = endpoint.request("POST", target, "action=resubscribe", **FORM)
    assert undone.status == 200
    assert "You are subscribed again" in undone.text
    assert "another reason" not in undone.text
    with endpoint.store() as store:
        assert store.count() == 0


def test_undo_never_lifts_a_bounce_or_another_list(endpoint: Endpoint) -> None:
    with SuppressionStore(endpoint.state) as writer:
        writer.add("ann@example.org", "bounced", source="bounce:issue-1")
        writer.add("ann@example.org", "unsubscribed", scope=OTHER)
    endpoint.one_click("ann@example.org")
    undone = endpoint.request("POST", endpoint.target("ann@example.org"), "action=resubscribe", **FORM)
    assert "still blocked for another reason" in undone.text
    with endpoint.store() as store:
        assert [(e.reason, e.scope) for e in store.entries() if e.key == "ann@example.org"] == [
            ("bounced", "*"),
            ("unsubscribed", OTHER),
        ]


def test_the_query_parameter_shape(start: Callable[..., Endpoint]) -> None:
    endpoint = start(QUERY_URL)
    target = endpoint.target("ann@example.org")
    assert target.startswith("/unsubscribe?list=weekly&t=")
    assert endpoint.request("GET", target).status == 200
    assert endpoint.request("POST", target, ONE_CLICK, **FORM).status == 200
    assert endpoint.request("POST", "/unsubscribe?list=weekly", ONE_CLICK, **FORM).status == 400
    with endpoint.store() as store:
        assert store.lookup("ann@example.org", NEWS) is not None


# --- Refusals --------------------------------------------------------------------------------


def test_bad_tokens_get_a_4xx_and_change_nothing(endpoint: Endpoint) -> None:
    good = endpoint.target("ann@example.org")
    token = good.rsplit("/", 1)[1]
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    bad = [
        good[:-1],
        good[:-10],
        "/u/",
        "/u/" + flipped,
        "/u/" + token + "A",
        "/u/%00" + token,
        endpoint.target("ann@example.org", secret="another-" + SECRET),
    ]
    for target in bad:
        for method, body in (("GET", None), ("POST", ONE_CLICK)):
            reply = endpoint.request(method, target, body, **FORM)
            assert reply.status == 400, (target, method)
            assert "This link does not work" in reply.text
            assert_safe_headers(reply)
    with endpoint.store() as store:
        assert store.count() == 0


def test_size_limits(endpoint: Endpoint) -> None:
    target = endpoint.target("ann@example.org")
    big = endpoint.request("POST", target, ONE_CLICK + "&x=" + "a" * MAX_BODY, **FORM)
    assert big.status == 413
    long_url = endpoint.request("GET", target + "?" + "x" * MAX_URL)
    assert long_url.status == 414
    with endpoint.store() as store:
        assert store.lookup("ann@example.org", NEWS) is None


def test_other_posts_paths_and_methods(endpoint: Endpoint) -> None:
    target = endpoint.target("ann@example.org")
    assert endpoint.request("POST", target, "List-Unsubscribe=Yes", **FORM).status == 400
    assert endpoint.request("POST", target, "{}", Content_Type="application/json").status == 415
    assert endpoint.request("GET", "/elsewhere").status == 404
    assert endpoint.request("GET", target + "/more").status == 404
    for method in ("PUT", "DELETE", "PATCH"):
        reply = endpoint.request(method, target)
        assert (reply.status, reply.headers["allow"]) == (405, "GET, HEAD, POST")
    with endpoint.store() as store:
        assert store.count() == 0


def test_health(endpoint: Endpoint) -> None:
    get = endpoint.request("GET", "/healthz")
    assert (get.status, get.text) == (200, "ok\n")
    assert endpoint.request("HEAD", "/healthz").status == 200
    post = endpoint.request("POST", "/healthz", "x")
    assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")


# --- Configuration, the masked address, the serve() loop --------------------------------------


def test_config_needs_the_url_and_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DISPATCH_UNSUBSCRIBE_SECRET"):
        ServeConfig(PATH_URL, "", "Org", tmp_path)
    with pytest.raises(ConfigError, match="DISPATCH_UNSUBSCRIBE_URL"):
        ServeConfig("", SECRET, "Org", tmp_path)
    assert SECRET not in repr(ServeConfig(PATH_URL, SECRET, "Org", tmp_path))


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("ann@example.org", "a\u2022\u2022\u2022@example.org"),
        ("zoe@xn--bcher-kva.example", "z\u2022\u2022\u2022@bücher.example"),
    ],
)
def test_mask(key: str, shown: str) -> None:
    assert mask(key) == shown


SERVE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dispatch.unsubscribe.serve import ServeConfig, serve
    config = ServeConfig(sys.argv[1], sys.argv[2], "Example Foundation", Path(sys.argv[3]))
    serve(config, "127.0.0.1", 0, announce=lambda url: print(url, flush=True))
    print("stopped", flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_a_signal(tmp_path: Path, signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, PATH_URL, SECRET, str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    port = int(url.rsplit(":", 1)[1])
    endpoint = Endpoint(port, tmp_path / "state", PATH_URL)
    assert endpoint.one_click("ann@example.org").status == 200
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.strip() == "stopped"
    assert SECRET not in out + err
    with endpoint.store() as store:
        assert store.lookup("ann@example.org", NEWS) is not None
