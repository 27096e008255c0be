"""The config file: validation with line numbers, `${ENV}` keys, and `check-config`."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.config import parse_settings
from gateway.errors import ConfigError
from gateway.ops.cli import main

GOOD = """\
gateway:
  markup: 1.5
clients:
  - name: owner
    key: ${OWNER_KEY}
providers:
  - name: a
    url: http://127.0.0.1:1/api/v2
    key: ${A_KEY}
    timeout_s: 2
services:
  - id: 1
    name: Followers
    price: 0.30
    upstreams: [{provider: a, service: 1}]
"""
ENV = {"OWNER_KEY": "k1", "A_KEY": "k2"}

ROOT = Path(__file__).resolve().parents[2]


def test_a_good_config_loads_with_decimal_money_and_env_keys():
    s = parse_settings(GOOD, env=ENV)
    assert s.gateway.markup == Decimal("1.5")
    assert s.services[0].price == Decimal("0.30")
    assert s.clients[0].key == "k1" and s.providers[0].key == "k2"
    assert s.providers[0].timeout_s == 2.0


@pytest.mark.parametrize("old, new, line, words", [
    ("  markup: 1.5", "  markupp: 1.5", 2, "unknown field `markupp`"),
    ("    timeout_s: 2", "    timeout_s: soon", 10, "Expected `float`"),
    ("    key: ${A_KEY}", "    key: ${MISSING_KEY}", 9, "MISSING_KEY is not set"),
    ("    upstreams: [{provider: a, service: 1}]",
     "    upstreams: [{provider: b, service: 1}]", 15, "unknown provider 'b'"),
    ("    url: http://127.0.0.1:1/api/v2", "    url: ftp://x", 8, "http:// or https://"),
    ("  - id: 1", "  - id: -1", 12, "positive"),
    ("    price: 0.30", "    price: 0.30\n    markup: 2", 15, "either price or markup"),
])
def test_errors_name_the_line(old, new, line, words):
    text = GOOD.replace(old, new)
    with pytest.raises(ConfigError) as err:
        parse_settings(text, "p.yaml", env=ENV)
    assert str(err.value).startswith(f"p.yaml:{line}:"), str(err.value)
    assert words in str(err.value)


def test_not_yaml():
    with pytest.raises(ConfigError, match=r"p.yaml:2: not valid YAML"):
        parse_settings("a: [1\nb: 2\n", "p.yaml", env={})


class Checked(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_check(monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Callable[[str, dict[str, str]], Checked]:
    """`smm-gateway check-config PATH` in-process, with exactly the given variables."""
    def run(path: str, env: dict[str, str]) -> Checked:
        for name in ("GATEWAY_KEY", "TOKSMM_KEY", "TESTEDSMM_KEY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(ROOT)
        with pytest.raises(SystemExit) as exited:
            main(["check-config", path])
        out = capsys.readouterr()
        return Checked(int(exited.value.code or 0), out.out, out.err)
    return run


def test_check_config_on_the_shipped_example(run_check):
    ok = run_check("providers.yaml", {"GATEWAY_KEY": "g", "TOKSMM_KEY": "t",
                                      "TESTEDSMM_KEY": "s"})
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = run_check("providers.yaml", {})
    assert bad.returncode != 0
    assert "providers.yaml:" in bad.stderr and "is not set" in bad.stderr


def test_check_config_reports_a_typo_with_its_line(tmp_path, run_check):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace("    timeout_s: 2", "    timeout: 2"))
    result = run_check(str(path), ENV)
    assert result.returncode == 1
    assert f"{path}:10:" in result.stderr and "timeout" in result.stderr
