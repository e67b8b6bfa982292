"""The README's two opening commands are what users and CI run; keep them honest."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"```bash\n(.+?)\n```", text, re.S)[:2]


def test_ci_runs_the_readme_test_command_verbatim():
    install_run, test = readme_commands()
    assert "requirements.txt" in install_run and "claude_proxy.py" in install_run
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert test in ci, "the README's test command must appear verbatim as a line of .ci/run"
    assert "pytest" in test and "requirements-test.txt" in test and "@anthropic-ai/claude-code" in test
