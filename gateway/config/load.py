"""Loading the configuration file: one loader for `serve`, `check-config` and a reload.

The text is read as YAML (floats kept as their text, so money never passes through
float), `${ENV_VAR}` replaced from the environment, every entry checked against the
schema and the rules across fields (`gateway.config.rules`), and every problem
named by its `file:line`. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.config.rules import ConfigPath, check_rules, structure
from gateway.config.schema import Settings
from gateway.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps floats as their text, so money never passes through float."""


def _keep_float_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:float", _keep_float_text)


def _line_of(root: yaml.Node | None, path: ConfigPath) -> int | None:
    """1-based line of the node at `path` (dict keys and list indexes)."""
    node, line = root, None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line if line else (node.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _expand_env(value: Any, env: dict[str, str], where: ConfigPath,
                missing: list[tuple[ConfigPath, str]]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in env:
                missing.append((where, m.group(1)))
                return m.group(0)  # left as written; checks on this value are skipped
            return env[m.group(1)]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, env, [*where, k], missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, env, [*where, i], missing) for i, v in enumerate(value)]
    return value


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f"; {exc.context} at line {exc.context_mark.line + 1}"
        return (f"{source}:{mark.line + 1}: not valid YAML: {exc.problem} "
                f"(column {mark.column + 1}{context})")
    return f"{source}:1: not valid YAML: {str(exc).replace('<unicode string>', source)}"


def check_text(text: str, source: str = "<config>",
               env: dict[str, str] | None = None) -> tuple[Settings | None, list[str]]:
    """Every problem in a config (`file:line: message`, in line order), and the
    settings when there is none. `serve` and `check-config` both come here."""
    env = dict(os.environ) if env is None else env
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(exc, source)]
    if not isinstance(data, dict):
        return None, [f"{source}:1: the top level must be a mapping"]
    missing: list[tuple[ConfigPath, str]] = []
    data = _expand_env(data, env, [], missing)
    found: list[tuple[int, int, str]] = []
    skip = [tuple(where) for where, _ in missing]

    def report(path: ConfigPath, message: str) -> None:
        if any(tuple(path[:len(w)]) == w for w in skip):
            return  # a value that is not known yet: its own checks would be noise
        line = _line_of(root, path) or 1
        found.append((line, len(found), f"{source}:{line}: {message}"))

    for where, var in missing:
        line = _line_of(root, where) or 1
        found.append((line, len(found),
                      f"{source}:{line}: environment variable {var} is not set"))
    clean, broken = structure(data, report)
    settings = msgspec.convert(clean, Settings, strict=False)
    check_rules(settings, report, broken)
    problems = [message for _, _, message in sorted(found)]
    return (None if problems else settings), problems


def parse_settings(text: str, source: str = "<config>",
                   env: dict[str, str] | None = None) -> Settings:
    """Parse and validate config text. Raises ConfigError naming file and line
    (every problem, one per line, the first line first)."""
    settings, problems = check_text(text, source, env)
    if settings is None:
        raise ConfigError("\n".join(problems))
    return settings


def check_file(path: str | Path,
               env: dict[str, str] | None = None) -> tuple[Settings | None, list[str]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        return None, [f"{p}: cannot read: {exc.strerror}"]
    return check_text(text, str(p), env)


def load_settings(path: str | Path, env: dict[str, str] | None = None) -> Settings:
    settings, problems = check_file(path, env)
    if settings is None:
        raise ConfigError("\n".join(problems))
    return settings
