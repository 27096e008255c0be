"""`pip install -e .` of the project, as `make run` and `make test` do it, with the build
tools at each end of the range `[build-system]` allows: it builds, it warns of nothing
deprecated, and the metadata carries the SPDX license and its file.

Each install goes into a throwaway virtualenv (the project's own is left alone); pip
fetches setuptools for its isolated build as any install does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from harness import ROOT

TESTED = ("77.0.3", "84.2.1")  # setuptools: the oldest and the newest the range allows


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_string_with_its_file() -> None:
    meta = project()["project"]
    assert isinstance(meta, dict)
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"] and (ROOT / "LICENSE").is_file()


def test_the_build_tools_are_pinned_to_the_tested_range() -> None:
    system = project()["build-system"]
    assert isinstance(system, dict)
    [requirement] = [Requirement(r) for r in system["requires"]]
    assert requirement.name == "setuptools"
    assert any(s.operator == "<" for s in requirement.specifier), "no upper bound"
    for version in TESTED:
        assert requirement.specifier.contains(version), version
    oldest = min(s.version for s in requirement.specifier if s.operator == ">=")
    assert oldest == TESTED[0], "the oldest allowed is the oldest tested"


@pytest.mark.parametrize("setuptools", TESTED)
def test_an_editable_install_warns_of_nothing(setuptools: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "gateway", source / "gateway",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    pin = tmp_path / "build-constraints.txt"
    pin.write_text(f"setuptools=={setuptools}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--build-constraint", str(pin), "-e", str(source)],
        capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "deprecat" not in out.lower(), out[-3000:]
    assert "project.license" not in out, out[-3000:]
    [metadata] = venv.glob("lib/python*/site-packages/smm_gateway-*.dist-info/METADATA")
    fields = [line for line in metadata.read_text().splitlines() if line.startswith("License")]
    assert fields == ["License-Expression: MIT", "License-File: LICENSE"], fields
