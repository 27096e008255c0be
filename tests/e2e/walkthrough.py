"""Reading a walk-through (docs/getting-started.md): its commands and the answers
shown under them.

A command is a `curl` line (continued over `\\` line ends and open quotes), a
`VAR=value` assignment or a `sleep N`; the answer expected of a command is the JSON
of the `# ...` comment at its end or of the comment lines right under it, where
`{...}` stands for any object and a trailing `...` in a list for more items.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

ANY_OBJECT = "<any object>"
MORE = "<more items>"
# strings compared exactly; any other string only by its kind
EXACT = ("error", "currency", "name", "type", "category")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass
class Step:
    command: str  # the shell text, comment removed
    expected: Any = None  # parsed JSON, with ANY_OBJECT / MORE placeholders
    inline: str = ""  # the comment at the end of the command
    below: str = ""  # the comment lines under it


def section(markdown: str, title: str = "## Walk-through") -> str:
    """The first ```sh block of the section whose heading starts with `title`."""
    start = markdown.index(title)
    end = markdown.find("\n## ", start + 1)
    body = markdown[start:end if end > 0 else None]
    m = re.search(r"```sh\n(.*?)```", body, re.S)
    assert m, "no ```sh block in the walk-through"
    return m.group(1)


def _scan(text: str) -> tuple[str, str, bool]:
    """(command, comment, a quote left open): the comment starts at the first `#`
    outside quotes that starts a word."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1:].strip(), False
    return text.rstrip(), "", bool(quote)


def _expectation(text: str) -> Any:
    """The JSON at the start of a comment, or None when it shows no answer."""
    text = text.strip()
    if not text.startswith(("{", "[")):
        return None
    text = text.replace("{...}", json.dumps(ANY_OBJECT))
    text = re.sub(r",\s*\.\.\.\s*\]", f', "{MORE}"]', text)
    value, _ = json.JSONDecoder().raw_decode(text)
    return value


def steps(block: str) -> list[Step]:
    out: list[Step] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            assert out, f"a comment before any command: {line}"
            out[-1].below += " " + line.lstrip()[1:].strip()
            continue
        text = line
        command, comment, open_quote = _scan(text)
        while (command.endswith("\\") and not comment) or open_quote:
            text = (text[:-1] + " " if not open_quote else text + "\n") + lines[i].strip()
            i += 1
            command, comment, open_quote = _scan(text)
        out.append(Step(command, inline=comment))
    for step in out:
        shown = _expectation(step.inline)
        step.expected = shown if shown is not None else _expectation(step.below)
    return out


def curl_request(command: str, variables: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """(url, form fields) of a `curl -s URL -d k=v --data-urlencode k=v` line."""
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    words = shlex.split(command)
    assert words[0] == "curl", command
    url, fields = "", []
    it = iter(words[1:])
    for word in it:
        if word in ("-d", "--data", "--data-urlencode"):
            name, _, value = next(it).partition("=")
            fields.append((name, value))
        elif word == "-s":
            continue
        else:
            assert not word.startswith("-"), f"unknown curl option {word}"
            url = word
    return url, fields


def mismatches(expected: Any, actual: Any, where: str = "$", key: str = "") -> list[str]:
    """Where `actual` does not have the shape of `expected` (empty: it does)."""
    if expected == ANY_OBJECT:
        return [] if isinstance(actual, dict) else [f"{where}: not an object: {actual!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: not an object: {actual!r}"]
        if set(expected) != set(actual):
            return [f"{where}: keys {sorted(actual)}, the page shows {sorted(expected)}"]
        return [m for k in expected for m in mismatches(expected[k], actual[k], f"{where}.{k}", k)]
    if isinstance(expected, list):
        return _list_mismatches(expected, actual, where)
    if isinstance(expected, str):
        return _string_mismatches(expected, actual, where, key)
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {actual!r}, the page shows {expected!r}"]
    return []


def _list_mismatches(expected: list[Any], actual: Any, where: str) -> list[str]:
    if not isinstance(actual, list):
        return [f"{where}: not a list: {actual!r}"]
    more = bool(expected) and expected[-1] == MORE
    shown = expected[:-1] if more else expected
    if len(actual) < len(shown) or (not more and len(actual) != len(shown)):
        return [f"{where}: {len(actual)} items, the page shows {len(shown)}"]
    out = [m for n, (e, a) in enumerate(zip(shown, actual, strict=False))
           for m in mismatches(e, a, f"{where}[{n}]")]
    if more and shown and isinstance(shown[0], dict):
        out += [f"{where}[{n}]: keys {sorted(a)}" for n, a in enumerate(actual)
                if not isinstance(a, dict) or set(a) != set(shown[0])]
    return out


def _string_mismatches(expected: str, actual: Any, where: str, key: str) -> list[str]:
    if not isinstance(actual, str):
        return [f"{where}: {actual!r} is not a string"]
    if key in EXACT:
        return [] if actual == expected else [f"{where}: {actual!r}, the page shows {expected!r}"]
    if DECIMAL.match(expected):
        places = Decimal(expected).as_tuple().exponent
        if not DECIMAL.match(actual) or Decimal(actual).as_tuple().exponent != places:
            return [f"{where}: {actual!r} is not a number written like {expected!r}"]
    return []
