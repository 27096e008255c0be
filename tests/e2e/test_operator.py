"""The operator's first hour: commands that find the running demo, key state that
survives restarts, and commands that say what is wrong instead of guessing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import httpx
import redis
import yaml

from demo_process import clean_env, running_demo
from gateway.state.embedded import free_port
from harness import ROOT, provider

INVALID = {"error": "Invalid API key"}


def cli(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_keys_disable_and_rotate_survive_a_gateway_restart(stack):
    gw, _a, _b = stack
    env = {**os.environ, "REDIS_URL": gw.redis_url}
    assert "balance" in gw.call(action="balance")
    disabled = cli("keys", "disable", "alice", env=env)
    assert disabled.returncode == 0, disabled.stderr
    rotated = cli("keys", "rotate", "bob", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new_bob = rotated.stdout.split("new key: ")[1].split()[0]
    gw.restart()
    assert gw.call(action="balance") == INVALID, "the config must not re-enable alice"
    assert gw.call(key="bob-key", action="balance") == INVALID, "nor bring back bob's key"
    assert "balance" in gw.call(key=new_bob, action="balance")
    assert cli("keys", "enable", "alice", env=env).returncode == 0
    gw.restart()
    assert "balance" in gw.call(action="balance")


def test_a_changed_config_entry_replaces_the_operators_change_with_a_warning(stack):
    gw, _a, _b = stack
    env = {**os.environ, "REDIS_URL": gw.redis_url}
    assert cli("keys", "disable", "alice", env=env).returncode == 0
    gw.stop()
    gw.config["clients"][0] = {"name": "alice", "key": "alice-key", "rate_limit": 50}
    gw.config_path.write_text(yaml.safe_dump(gw.config, sort_keys=False))
    gw.start()
    assert "balance" in gw.call(action="balance")
    assert "overriding changes made with `keys`" in gw.log()


def test_the_demo_prints_what_makes_the_operator_commands_find_it(tmp_path):
    data = tmp_path / "demo"
    with running_demo(data) as demo:
        out = demo.output()
        exports = demo.exports()
        assert exports["SMM_GATEWAY_DATA"] == str(data.resolve())
        assert exports["SMM_GATEWAY_CONFIG"] == str((data / "demo.yaml").resolve())
        assert "source " in out and "bin/activate" in out
        # the README's commands, as written, from another directory
        env = clean_env(**exports)
        listed = cli("keys", "list", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "demo" in listed.stdout and "active" in listed.stdout
        route = cli("route", "1", "5000", env=env, cwd=tmp_path)
        assert route.returncode == 0, route.stderr
        assert "sim-testedsmm #101" in route.stdout and "TAKEN" in route.stdout
        unknown = cli("catalog", "confirm", "77", env=env, cwd=tmp_path)
        assert unknown.returncode != 0 and "no service 77" in unknown.stderr
        assert cli("catalog", "confirm", "1", env=env, cwd=tmp_path).returncode == 0
        suggested = cli("catalog", "suggest", env=env, cwd=tmp_path)
        assert suggested.returncode == 0, suggested.stderr
    proposed = yaml.safe_load(suggested.stdout)["services"]
    assert proposed and all(s["id"] > 4 for s in proposed), "configured ids 1..4 are taken"
    ups = [u["service"] for s in proposed for u in s["upstreams"]]
    assert all(isinstance(x, int) for x in ups), ups
    followers = next(s for s in proposed if s["name"] == "TikTok Followers (refill)")
    assert f"- id: {followers['id']}  # rate 0.56250 USD/1000" in suggested.stdout
    # a second start is clean, and says so
    with running_demo(data) as demo:
        assert "starting clean" in demo.output()
        r = httpx.post(demo.url, data={"key": "demo-key", "action": "status", "order": 100000})
        assert r.json() == {"error": "Incorrect order ID"}


def test_a_data_dir_without_gateway_data_is_an_error_not_an_empty_redis(tmp_path):
    empty = tmp_path / "nothing"
    for args in (["keys", "list"], ["orders", "unknown"]):
        result = cli(*args, env=clean_env(SMM_GATEWAY_DATA=str(empty)))
        assert result.returncode != 0
        assert f"no gateway data in {empty}" in result.stderr
    assert not empty.exists(), "no Redis may be started there"
    result = cli("keys", "list", "--data-dir", str(empty), env=clean_env())
    assert result.returncode != 0 and "no gateway data" in result.stderr


def test_route_says_list_never_fetched_like_catalog_show(sims, fresh_redis, tmp_path):
    a, _b = sims
    dead = {"name": "dead", "key": "k", "timeout_s": 1,  # nothing listens there
            "url": f"http://127.0.0.1:{free_port()}/api/v2"}
    config = {
        "gateway": {"status_cache_s": 0},
        "clients": [{"name": "alice", "key": "alice-key"}],
        "providers": [provider("live", a), dead],
        "services": [{"id": 1, "name": "Followers", "upstreams": [
            {"provider": "live", "service": 1}, {"provider": "dead", "service": 1}]}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    flush = redis.Redis.from_url(fresh_redis)
    flush.flushdb()
    flush.close()
    env = {**os.environ, "REDIS_URL": fresh_redis}
    route = cli("route", "1", "100", "--config", str(path), env=env)
    assert route.returncode == 0, route.stderr
    assert "dead #1: skipped: list never fetched" in route.stdout
    assert "not listed upstream" not in route.stdout
    show = cli("catalog", "show", "--config", str(path), env=env)
    assert "provider dead: list never fetched" in show.stdout
    assert any("dead" in x and "list never fetched" in x for x in show.stdout.splitlines()
               if "#1" in x)


def _options(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((f"{where} {action.dest}", action.help))
    return found


def test_every_cli_option_has_help_text():
    from gateway.ops.arguments import parser
    options = _options(parser("", "c.yaml", "data", "data/demo"), "smm-gateway")
    assert len(options) > 40
    assert [name for name, text in options if not text] == []
    result = subprocess.run([sys.executable, "-m", "gateway", "simulate", "--help"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    assert "--progress-s" in result.stdout and "Pending" in result.stdout
