"""The docs site: it builds strictly, every page is in the nav, the README links
them, and the configuration reference matches the config schema.

The schema is the msgspec structs under `gateway.config.Settings`: every field
that is not itself a struct is a setting, named by its path in the file
(`gateway.durability`, `clients[].providers.allow`). docs/configuration.md names
each in the first cell of a table row, with its default in the second, so a
setting added to the structs fails here until it has its row.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"
README = ROOT / "README.md"
README_MAX_LINES = 200

REQUIRED = "required"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([^|]*?)\s*\|", re.M)
SETTING = re.compile(r"^[a-z_]+(\[\])?(\.[a-z_]+(\[\])?)+$")


@dataclass(frozen=True)
class Setting:
    path: str
    required: bool
    default: Any
    choices: tuple[str, ...]  # a Literal's values, else ()


def _struct_of(tp: msgspec.inspect.Type) -> tuple[msgspec.inspect.StructType | None, str]:
    """The struct a field holds (directly, optionally or as list items) and the
    path suffix that reaches into it ("." or "[].")."""
    if isinstance(tp, msgspec.inspect.UnionType):
        structs = [t for t in tp.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(structs) == 1:
            return _struct_of(structs[0])
    if isinstance(tp, msgspec.inspect.StructType):
        return tp, "."
    if isinstance(tp, msgspec.inspect.ListType) and isinstance(tp.item_type,
                                                               msgspec.inspect.StructType):
        return tp.item_type, "[]."
    return None, ""


def _choices(tp: msgspec.inspect.Type) -> tuple[str, ...]:
    if isinstance(tp, msgspec.inspect.UnionType):
        return tuple(c for t in tp.types for c in _choices(t))
    if isinstance(tp, msgspec.inspect.LiteralType):
        return tuple(str(v) for v in tp.values)
    return ()


def schema_settings(struct: msgspec.inspect.StructType | None = None,
                    prefix: str = "") -> list[Setting]:
    """Every setting under `struct` (default: the whole file), in schema order."""
    if struct is None:
        info = msgspec.inspect.type_info(Settings)
        assert isinstance(info, msgspec.inspect.StructType)
        struct = info
    out: list[Setting] = []
    for field in struct.fields:
        inner, joint = _struct_of(field.type)
        name = f"{prefix}{field.encode_name}"
        if inner is not None:
            out += schema_settings(inner, f"{name}{joint}")
            continue
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        else:
            default = field.default
        out.append(Setting(name, field.required, default, _choices(field.type)))
    return out


def schema_sections() -> set[str]:
    """The structs a setting sits in, by path (`clients[].providers`,
    `services[].upstreams`): a row may describe one, none has to."""
    out = set()
    for s in schema_settings():
        parts = s.path.split(".")
        out |= {".".join(parts[:n]).removesuffix("[]") for n in range(1, len(parts))}
    return out


def documented_rows() -> dict[str, tuple[str, str]]:
    """setting path -> (its default cell, its whole row), from the reference's tables."""
    text = REFERENCE.read_text()
    rows: dict[str, tuple[str, str]] = {}
    for m in ROW.finditer(text):
        key, cell = m.group(1), m.group(2)
        if SETTING.match(key):
            line_end = text.find("\n", m.start())
            rows[key] = (cell, text[m.start():line_end if line_end > 0 else None])
    return rows


def _default_matches(cell: str, setting: Setting) -> bool:
    shown = cell.strip().strip("`").strip()
    if setting.required:
        return shown == REQUIRED
    value = setting.default
    if value is None:
        return shown == "none"
    if isinstance(value, bool):
        return shown == ("true" if value else "false")
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(shown) == Decimal(str(value))
        except InvalidOperation:
            return False
    if isinstance(value, str):
        return shown == (value or '""')
    if isinstance(value, list | dict):
        return not value and shown == ("[]" if isinstance(value, list) else "{}")
    return False


def test_the_schema_walk_finds_the_settings_of_every_struct() -> None:
    found = {s.path for s in schema_settings()}
    for path in ("gateway.currency", "alerts.webhooks", "clients[].name",
                 "clients[].providers.allow", "providers[].url", "services[].id",
                 "services[].upstreams[].provider", "mirror[].name_pattern"):
        assert path in found, path
    assert not any(p in found for p in ("gateway", "clients[].providers", "services[].upstreams")
                   ), "a struct is a section, not a setting"


def test_the_configuration_reference_names_every_setting() -> None:
    schema = {s.path: s for s in schema_settings()}
    rows = documented_rows()
    missing = [s for path, s in schema.items() if path not in rows]
    gone = sorted(set(rows) - set(schema) - schema_sections())
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} setting(s) of gateway/config.py missing from "
            "docs/configuration.md; add a table row for each (path | default | meaning):\n"
            + "\n".join(f"    {s.path}  (default: "
                        f"{REQUIRED if s.required else repr(s.default)})" for s in missing))
    if gone:
        problems.append(
            f"{len(gone)} setting(s) documented in docs/configuration.md but not in "
            "gateway/config.py (renamed or removed? drop or fix the row):\n"
            + "\n".join(f"    {path}" for path in gone))
    assert not problems, "\n".join(problems)


def test_the_configuration_reference_shows_each_default_and_choice() -> None:
    rows = documented_rows()
    wrong = []
    for s in schema_settings():
        if s.path not in rows:
            continue  # reported by the test above
        cell, row = rows[s.path]
        if not _default_matches(cell, s):
            shown = REQUIRED if s.required else ("none" if s.default is None else s.default)
            wrong.append(f"    {s.path}: the page shows {cell!r}, the schema's default is "
                         f"{shown!r}")
        unnamed = [c for c in s.choices if f"`{c}`" not in row]
        if unnamed:
            wrong.append(f"    {s.path}: the row does not name the choice(s) "
                         + ", ".join(f"`{c}`" for c in unnamed))
    assert not wrong, "docs/configuration.md disagrees with gateway/config.py:\n" + \
        "\n".join(wrong)


class _NavLoader(yaml.SafeLoader):
    """mkdocs.yml with its python tags read as nothing (only the nav is wanted)."""


_NavLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_NavLoader)
    return _nav_pages(config["nav"])


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    pages = nav_pages()
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(on_disk) - set(pages)) == [], "pages left out of mkdocs.yml's nav"
    assert sorted(set(pages) - set(on_disk)) == [], "nav entries with no page"


def test_the_readme_is_the_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, (
        f"README.md has {len(text.splitlines())} lines (at most {README_MAX_LINES}): "
        "move the detail into a page under docs/")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert [link for link in local if not (ROOT / link).exists()] == [], "README links to nothing"
    unlinked = [page for page in nav_pages() if f"docs/{page}" not in local]
    assert unlinked == [], "docs pages the README does not link"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, a missing anchor or a page out of
    the nav is an error (mkdocs.yml's `validation`)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                          "-d", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
