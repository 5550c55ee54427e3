"""Limits on guessing the dashboard token: per client address and globally, 429 with
Retry-After, over real HTTP on loopback (uvicorn in a thread, with and without
``--proxy-headers``), and the limiter itself on a controlled clock."""

from __future__ import annotations

import time

import httpx
import pytest
from test_serve_intake import SECRET, SERVICES, TOKEN, RecordingSubmitter

from afdp.service.app import ServeSettings, create_app, running_server, token_matches
from afdp.service.config import load_services
from afdp.service.throttle import LoginLimits, LoginThrottle

# A lock-out long enough that no slow request outlasts it (the machine may be loaded) ...
FAST = LoginLimits(free_failures=3, first_delay=30, max_delay=60, global_burst=1000, global_per_second=100)
# ... and one short enough to wait out.
SHORT = LoginLimits(free_failures=3, first_delay=3, max_delay=5, global_burst=1000, global_per_second=100)


@pytest.fixture()
def services(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(SERVICES)
    return load_services(path)


def serve(repo, services, limits=FAST, *, proxy_headers=False):
    settings = ServeSettings(repository=repo, services=services, webhook_secret=SECRET,
                             submitter=RecordingSubmitter(), ui_token=TOKEN, login_limits=limits)
    return running_server(create_app(settings), proxy_headers=proxy_headers)


def metric(url: str, name: str, **labels) -> float:
    """Scrape ``/metrics`` from another loopback address (127.0.0.2): the lock-outs these
    tests provoke hold 127.0.0.1, and a scraper elsewhere is not held by them."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
        answer = client.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    total = 0.0
    for line in answer.text.splitlines():
        if (line.startswith(name + "{") or line.split(" ")[0] == name) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def login(url, token, **headers):
    return httpx.post(f"{url}/login", data={"token": token}, headers=headers, follow_redirects=False, timeout=10)


# -- the limiter -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_backs_off_exponentially_after_its_free_failures():
    clock = Clock()
    throttle = LoginThrottle(LoginLimits(free_failures=2, first_delay=1, max_delay=8), clock=clock)
    for _ in range(2):
        assert throttle.check("a") is None
        throttle.failure("a")
    assert throttle.check("a") is None  # two free failures
    waits = []
    for _ in range(6):
        throttle.failure("a")
        limited = throttle.check("a")
        assert limited is not None and limited.limit == "address"
        waits.append(limited.retry_after)
        clock.now += limited.retry_after
        assert throttle.check("a") is None
    assert waits == [1, 2, 4, 8, 8, 8]  # doubling, capped
    assert throttle.check("b") is None  # another address is not held


def test_a_right_token_and_a_quiet_hour_start_an_address_afresh():
    clock = Clock()
    throttle = LoginThrottle(LoginLimits(free_failures=1, first_delay=10, forget_after=3600), clock=clock)
    throttle.failure("a")
    throttle.failure("a")
    assert throttle.check("a") is not None
    throttle.success("a")
    assert throttle.check("a") is None
    throttle.failure("a")
    throttle.failure("a")
    clock.now += 3601
    throttle.failure("a")  # the old failures are forgotten: this one is free
    assert throttle.check("a") is None


def test_the_global_bucket_holds_many_addresses_together():
    clock = Clock()
    throttle = LoginThrottle(LoginLimits(free_failures=100, global_burst=5, global_per_second=0.5), clock=clock)
    for n in range(5):
        assert throttle.check(f"10.0.0.{n}") is None
        throttle.failure(f"10.0.0.{n}")
    limited = throttle.check("10.0.0.99")  # a fresh address too
    assert limited is not None and limited.limit == "global" and limited.header == "2"
    clock.now += 2
    assert throttle.check("10.0.0.99") is None


def test_the_address_table_is_bounded():
    throttle = LoginThrottle(LoginLimits(free_failures=0, max_addresses=10, global_burst=10**6))
    for n in range(50):
        throttle.failure(f"10.0.{n}.1")
    assert len(throttle._addresses) == 10


def test_token_comparison_is_by_fixed_length_digests():
    token = TOKEN
    assert token_matches(token, token)
    for wrong in ("", token[:-1], token + "x", token.upper(), "x" * 10_000, "é" * 5, token[::-1]):
        assert not token_matches(wrong, token)


# -- over HTTP ---------------------------------------------------------------------------


def test_wrong_logins_are_limited_with_retry_after_and_a_lockout_is_no_oracle(repo, services):
    with serve(repo, services, SHORT) as server:
        for _ in range(FAST.free_failures + 1):
            assert login(server.url, "wrong-token").status_code == 401
        locked = login(server.url, "wrong-token")
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1
        assert "too many wrong tokens" in locked.text
        # the right token during the lock-out is not even compared
        assert login(server.url, TOKEN).status_code == 429
        assert metric(server.url, "afdp_login_throttled_total", limit="address") == 2
        assert metric(server.url, "afdp_login_failures_total") == FAST.free_failures + 1
        time.sleep(SHORT.first_delay + 0.1)
        assert login(server.url, TOKEN).status_code == 303  # after the wait: in, and the count is cleared
        for _ in range(FAST.free_failures):
            assert login(server.url, "wrong-token").status_code == 401


def test_a_successful_login_is_never_slowed(repo, services):
    with serve(repo, services) as server:
        for _ in range(3 * FAST.free_failures):
            started = time.monotonic()
            answer = login(server.url, TOKEN)
            assert answer.status_code == 303 and "afdp_session" in answer.cookies
            assert time.monotonic() - started < 2


def test_bearer_guesses_are_limited_as_logins_are(repo, services):
    with serve(repo, services) as server:
        for _ in range(FAST.free_failures + 1):
            assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401
        answer = httpx.get(f"{server.url}/api/deployments", headers={"Authorization": "Bearer guess"})
        assert answer.status_code == 429 and "retry-after" in answer.headers
        # and the login form shares the count: the same address is held there too
        assert login(server.url, "wrong-token").status_code == 429


def test_a_spoofed_x_forwarded_for_does_not_bypass_the_limit(repo, services):
    with serve(repo, services) as server:  # no --proxy-headers: the socket peer is the address
        codes = [login(server.url, "wrong-token", **{"X-Forwarded-For": f"203.0.113.{n}"}).status_code
                 for n in range(FAST.free_failures + 3)]
        assert codes[: FAST.free_failures + 1] == [401] * (FAST.free_failures + 1)
        assert set(codes[FAST.free_failures + 1:]) == {429}


def test_behind_a_trusted_proxy_each_client_has_its_own_count(repo, services):
    with serve(repo, services, proxy_headers=True) as server:  # the proxy on loopback is trusted
        alice, mallory = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "203.0.113.66"}
        for _ in range(FAST.free_failures + 1):
            assert login(server.url, "wrong-token", **mallory).status_code == 401
        assert login(server.url, "wrong-token", **mallory).status_code == 429
        # another client behind the same proxy is not locked out by mallory
        assert login(server.url, "wrong-token", **alice).status_code == 401
        assert login(server.url, TOKEN, **alice).status_code == 303


def test_the_global_limit_holds_across_addresses(repo, services):
    limits = LoginLimits(free_failures=100, global_burst=4, global_per_second=0.2)
    with serve(repo, services, limits, proxy_headers=True) as server:
        cookie = login(server.url, TOKEN).cookies["afdp_session"]
        codes = [login(server.url, "wrong-token", **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
                 for n in range(6)]
        assert codes == [401] * 4 + [429] * 2
        registry = server.app.state.metrics.registry  # every address is held now, a scraper's too
        assert registry.get_sample_value("afdp_login_throttled_total", {"limit": "global"}) == 2
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
        # a session opened before is no token guess: it is not held
        assert httpx.get(f"{server.url}/", cookies={"afdp_session": cookie}).status_code == 200
