"""Key pools and cooldowns (issue #12): several keys per backend taken in turn, a rate-limited key resting and a
refused one set aside while the request moves on at once; a backend failing again and again skipped for a
while in favour of its fallbacks. The strict fake backend answers as OpenAI does (429 with retry-after, 401)."""

from __future__ import annotations

import time

import anthropic
import pytest

import claude_proxy as cp

OK, LIMITED, REVOKED = "sk-pool-good-0001", "sk-pool-busy-0002", "sk-pool-gone-0003"


def ask(proxy, model: str = "claude-sonnet-5") -> anthropic.types.Message:
    return anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0).messages.create(
        model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}])


def keys_used(backend, since: int = 0) -> list[str]:
    return [h["Authorization"][7:] for h in backend.headers[since:]]


def test_keys_are_taken_in_turn_and_busy_or_refused_ones_are_passed_over_at_once(make_proxy, backend, caplog):
    caplog.set_level("INFO")
    backend.rate_limited_keys, backend.revoked_keys = {LIMITED}, {REVOKED}
    proxy = make_proxy(api_key=f"{OK},{LIMITED},{REVOKED}", retries=0)
    for _ in range(4):
        assert ask(proxy).content[0].text.startswith("Hello")  # every request answered, none retried late
    assert keys_used(backend) == [OK, LIMITED, REVOKED, OK, OK, OK]
    assert "backend default: key …0002 is rate-limited; it rests 20s" in caplog.text
    assert "backend default: key …0003 was refused (HTTP 401" in caplog.text and "set aside until restart" in caplog.text
    assert LIMITED not in caplog.text and REVOKED not in caplog.text


def test_when_every_key_rests_the_client_gets_429_with_the_soonest_return(make_proxy, backend):
    backend.rate_limited_keys = {OK, LIMITED}
    proxy = make_proxy(api_key=f"{OK},{LIMITED}", retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        ask(proxy)
    assert "every key of backend default is rate-limited; the first is back in 20s" in info.value.message
    assert info.value.response.headers["retry-after"] == "20"
    assert keys_used(backend) == [OK, LIMITED]
    with pytest.raises(anthropic.RateLimitError):
        ask(proxy)
    assert len(backend.headers) == 2  # resting keys are not tried again before their time


def test_when_every_key_is_refused_the_client_gets_the_refusal(make_proxy, backend):
    backend.revoked_keys = {OK, REVOKED}
    with pytest.raises(anthropic.AuthenticationError) as info:
        ask(make_proxy(api_key=f"{OK},{REVOKED}", retries=0))
    assert "Incorrect API key provided" in info.value.message and REVOKED not in info.value.message


def test_pools_from_the_config_file(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("POOL_A", "sk-a1,sk-a2")
    monkeypatch.setenv("POOL_B", "sk-b1")
    path = tmp_path / "p.toml"
    path.write_text(f'[[backends]]\nname = "one"\nurl = "http://127.0.0.1:{backend.port}/v1"\n'
                    f'api_keys = ["sk-1", "sk-2"]\n\n[[backends]]\nname = "two"\nurl = "http://x"\n'
                    f'api_key_env = ["POOL_A", "POOL_B"]\ncooldown_failures = 2\ncooldown_seconds = 5\n')
    config = cp.Config(**cp.load_config_file(str(path)))
    one, two = config.routing.backends["one"], config.routing.backends["two"]
    assert one.api_keys == ("sk-1", "sk-2") and one.api_key == "sk-1"
    assert two.api_keys == ("sk-a1", "sk-a2", "sk-b1") and (two.cooldown_failures, two.cooldown_seconds) == (2, 5)
    assert set(config.secret_values) >= {"sk-1", "sk-2", "sk-a1", "sk-a2", "sk-b1"}
    assert cp.Config(api_key="k1, k2").routing.primary.api_keys == ("k1", "k2")


COOLING = '''
[[backends]]
name = "flaky"
url = "http://127.0.0.1:{port}/v1"
cooldown_failures = 3
cooldown_seconds = 0.6

[[backends]]
name = "steady"
url = "http://127.0.0.1:{port}/v1"

[[routes]]
match = "*sonnet*"
backend = "flaky"
model = "status-503-flaky"
fallbacks = ["steady:fake-model"]

[[routes]]
match = "*"
backend = "flaky"
model = "status-503-alone"
'''


def test_a_backend_failing_three_times_in_a_row_is_skipped_for_a_while(make_proxy, backend, tmp_path, caplog):
    path = tmp_path / "c.toml"
    path.write_text(COOLING.format(port=backend.port))
    proxy = make_proxy(model=None, retries=0, **cp.load_config_file(str(path)))

    def flaky_calls() -> int:
        return sum(1 for r in backend.requests if r["model"] == "status-503-flaky")

    for _ in range(3):
        assert ask(proxy).content[0].text.startswith("Hello from fake-model")  # each fell back
    assert flaky_calls() == 3 and "backend flaky failed 3 times in a row: skipped for 0.6s" in caplog.text
    ask(proxy)
    assert flaky_calls() == 3  # skipped: straight to the fallback
    with pytest.raises(anthropic.InternalServerError):  # no fallback left: still asked, rather than failing unasked
        ask(proxy, model="gpt-x")
    assert backend.requests[-1]["model"] == "status-503-alone"
    time.sleep(0.7)
    ask(proxy)
    assert flaky_calls() == 4  # tried again after the cooldown
