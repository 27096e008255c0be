"""`check-config` and `serve` share one loader: every problem at once, each as
`file:line: message`, with the rules `serve` would otherwise trip over later."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import check_text, parse_settings
from gateway.errors import ConfigError
from gateway.ops.cli import main

GOOD = """\
gateway:
  markup: 1.5
  log_level: INFO
clients:
  - name: owner
    key: k1
    services: [1]
providers:
  - name: a
    url: http://127.0.0.1:1/api/v2
    key: k2
    timeout_s: 2
services:
  - id: 1
    name: Followers
    price: 0.30
    upstreams: [{provider: a, service: 1}]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    settings, found = check_text(text, "p.yaml", env or {})
    assert (settings is None) == bool(found)
    return found


def test_the_good_config_has_no_problem() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize("old, new, line, words", [
    ("  log_level: INFO", "  log_level: verbose", 3, "log_level must be one of"),
    ("    services: [1]", "    services: [1, 9]", 7, "unknown service id 9"),
    ("    services: [1]", "    rate_limit: 0", 7, "rate_limit must be > 0"),
    ("    services: [1]", "    rate_limit: -5", 7, "rate_limit must be > 0"),
    ("    services: [1]", "    burst: 0", 7, "burst must be >= 1"),
    ("    services: [1]", "    prices: {2: 0.5}", 7, "unknown service id 2"),
    ("    timeout_s: 2", "    timeout_s: -1", 12, "timeout_s must be > 0"),
    ("  markup: 1.5", "  markup: 1.5\n  header_timeout_s: 0", 3, "header_timeout_s must be > 0"),
    ("  markup: 1.5", "  markup: 1.5\n  body_timeout_s: -2", 3, "body_timeout_s must be > 0"),
    ("  markup: 1.5", "  markup: 1.5\n  trusted_proxies: [10.0.0.0/8, nginx]", 3,
     "not an address or network"),
    ("  markup: 1.5", "  markup: 1.5\n  status_cache_s: -1", 3, "status_cache_s must be >= 0"),
    ("    price: 0.30", "    price: 0", 16, "price must be > 0"),
    ("    upstreams: [{provider: a, service: 1}]",
     "    upstreams: [{provider: b, service: 1}]", 17, "unknown provider 'b' (providers: a)"),
])
def test_each_rule_names_its_line(old: str, new: str, line: int, words: str) -> None:
    found = problems(GOOD.replace(old, new))
    assert len(found) == 1, found
    assert found[0].startswith(f"p.yaml:{line}: "), found
    assert words in found[0]


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = (GOOD.replace("  log_level: INFO", "  log_level: verbose\n  markupp: 2")
            .replace("    services: [1]", "    services: [1, 7]\n    rate_limit: 0")
            .replace("    timeout_s: 2", "    timeout: 2\n    key2: x")
            .replace("    price: 0.30", "    price: abc"))
    found = problems(text)
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)
    assert len(found) == 7, "\n".join(found)
    joined = "\n".join(found)
    for words in ("log_level", "unknown field `markupp` in $.gateway (did you mean `markup`?)",
                  "unknown service id 7", "rate_limit", "did you mean `timeout_s`?",
                  "unknown field `key2`", "Invalid decimal"):
        assert words in joined


def test_unknown_keys_suggest_the_nearest_known_one() -> None:
    [found] = problems(GOOD.replace("    timeout_s: 2", "    timout_s: 2"))
    assert found.startswith("p.yaml:12: unknown field `timout_s`")
    assert "did you mean `timeout_s`?" in found
    [found] = problems(GOOD.replace("gateway:", "gateway:\n  zzz: 1"))
    assert "known keys:" in found and "markup" in found
    found = problems(GOOD.replace("services:\n  - id", "service:\n  - id"))
    assert "p.yaml:13: unknown field `service` (did you mean `services`?)" in found


def test_missing_variables_are_all_named_without_echo_errors() -> None:
    text = GOOD.replace("key: k1", "key: ${K1}").replace("key: k2", "key: ${K2}")
    found = problems(text)
    assert [p.split(": ", 1)[1] for p in found] == [
        "environment variable K1 is not set", "environment variable K2 is not set"]
    assert problems(text, {"K1": "x", "K2": "y"}) == []


def test_yaml_errors_name_the_file_not_a_unicode_string() -> None:
    [found] = problems("a: [1\nb: 2\n")
    assert found.startswith("p.yaml:2: not valid YAML")
    assert "unicode string" not in found


def test_parse_settings_raises_with_the_first_problem_first() -> None:
    text = GOOD.replace("  log_level: INFO", "  log_level: loud").replace("price: 0.30",
                                                                          "price: -1")
    with pytest.raises(ConfigError) as err:
        parse_settings(text, "p.yaml", env={})
    first, second = str(err.value).splitlines()
    assert first.startswith("p.yaml:3: log_level")
    assert second.startswith("p.yaml:16: price must be > 0")


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("  log_level: INFO", "  log_level: verbose")
                    .replace("    services: [1]", "    services: [3]\n    rate_limit: 0"))
    return path


def test_check_config_prints_every_error(bad_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check-config", str(bad_file)])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {bad_file}:3: log_level must be one of" in err
    assert f"error: {bad_file}:7: unknown service id 3" in err
    assert f"error: {bad_file}:8: rate_limit must be > 0" in err
    assert "3 errors" in err


def test_serve_refuses_with_the_same_messages(bad_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--config", str(bad_file), "--port", "1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad_file}:3: log_level must be one of" in err
    assert f"{bad_file}:7: unknown service id 3" in err
    assert f"{bad_file}:8: rate_limit must be > 0" in err


def test_check_config_reads_the_config_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("SMM_GATEWAY_CONFIG", str(path))
    with pytest.raises(SystemExit) as exited:
        main(["check-config"])
    assert exited.value.code == 0
    assert f"{path}: ok" in capsys.readouterr().out
