"""The README's two opening commands are what users and CI run; keep them honest."""

import os
import re
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[str]:
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, re.DOTALL)[:2]


def test_ci_runs_the_readme_test_command_verbatim():
    install_run, test = readme_commands()
    assert "requirements.txt" in install_run and "claude_proxy.py" in install_run
    ci = Path(ROOT, ".ci", "run").read_text(encoding="utf-8").splitlines()
    assert test in ci, "the README's test command must appear verbatim as a line of .ci/run"
    assert "pytest" in test and "requirements-test.txt" in test and "@anthropic-ai/claude-code" in test


def test_readme_config_example_loads(tmp_path, monkeypatch):
    import sys
    sys.path.insert(0, ROOT)
    import claude_proxy as cp
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.+?)\n```", text, re.DOTALL).group(1)
    path = tmp_path / "example.toml"
    path.write_text(example)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-d")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-g")
    config = cp.Config(**cp.load_config_file(str(path)))
    assert [(b.name, m) for b, m in config.routing.candidates("claude-haiku-4-5")] == [
        ("groq", "llama-3.3-70b-versatile"), ("deepseek", "deepseek-chat")]
    assert config.routing.candidates("experiment-qwen")[0][0].name == "local"
    assert config.routing.backend_model("claude-opus-4-8") == "deepseek-chat"


def test_every_flag_is_in_the_readme_configuration_table():
    import sys
    sys.path.insert(0, ROOT)
    import claude_proxy as cp
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Configuration"):text.index("## Several backends")]
    flags = [opt for p in cp._build_cli().params for opt in p.opts if opt.startswith("--") and opt != "--help"]
    assert len(flags) > 20
    missing = [f for f in flags if f"`{f}`" not in table]
    assert not missing, missing
