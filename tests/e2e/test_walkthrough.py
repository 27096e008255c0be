"""The walk-through of docs/getting-started.md, run as written against `smm-gateway
demo`: every curl line is sent (by Python, the same fields curl sends) to a real demo
process, and each answer must have the shape of the one the page shows under it.
The README's one curl must be a step of that walk-through, with the same answer."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode

import httpx

from demo_process import running_demo
from harness import ROOT
from walkthrough import curl_request, mismatches, section, steps

# the lead may point this at a draft of the page (it defaults to the real one)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PAGE = Path(os.environ.get("SMM_WALKTHROUGH", ROOT / "docs" / "getting-started.md"))
README = ROOT / "README.md"


def test_the_parser_reads_the_walkthrough():
    block = section(PAGE.read_text())
    found = steps(block)
    curls = [s for s in found if s.command.startswith("curl")]
    assert len(curls) >= 13
    assert all(s.expected is not None for s in curls), "answers under the commands"
    comments = next(s for s in curls if "comments=" in s.command)
    _url, fields = curl_request(comments.command, {"GW": "http://x"})
    assert ("comments", "great\nlove it\nwow") in fields


def test_the_readme_curl_is_a_step_of_the_walkthrough():
    walk = steps(section(PAGE.read_text()))
    gw = next(s.command.partition("=")[2] for s in walk if s.command.startswith("GW="))
    shown = {(s.command.replace("$GW", gw), str(s.expected)) for s in walk}
    readme = [s for s in steps(section(README.read_text(), "## One curl"))
              if s.command.startswith("curl")]
    assert readme, "no curl under the README's `## One curl`"
    for step in readme:
        assert step.expected is not None, f"no answer under {step.command}"
        assert (step.command, str(step.expected)) in shown, (
            f"the README's {step.command!r} (answer {step.expected}) is not a step of "
            f"the walk-through in {PAGE.relative_to(ROOT)}")


def test_the_walkthrough_is_true_to_the_demo(tmp_path):
    block = section(PAGE.read_text())
    variables: dict[str, str] = {}
    checked, problems = 0, []
    with running_demo(tmp_path / "demo") as demo, httpx.Client(timeout=30) as http:
        for step in steps(block):
            command = step.command
            if command.startswith("sleep "):
                # what the wait is for (the simulated orders moving on), without
                # waiting: both demo simulators' clocks are moved on as far
                for sim_port in (demo.port + 1, demo.port + 2):
                    http.post(f"http://127.0.0.1:{sim_port}/_sim/clock",
                              json={"advance_s": float(command.split()[1])})
                continue
            if "=" in command.split()[0] and not command.startswith("curl"):
                name, _, value = command.partition("=")
                variables[name] = value.replace("127.0.0.1:8080", f"127.0.0.1:{demo.port}")
                continue
            url, fields = curl_request(command, variables)
            answer = http.post(url, content=urlencode(fields), headers=FORM).json()
            if step.expected is None:
                continue
            checked += 1
            problems += [f"{command}\n    {m}" for m in mismatches(step.expected, answer)]
    assert checked >= 13
    assert not problems, "\n".join(problems)
