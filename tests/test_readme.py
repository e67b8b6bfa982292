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
    assert install_run.startswith("uv run claude_proxy.py ")  # the dependencies come from the file's metadata
    ci = Path(ROOT, ".ci", "run").read_text(encoding="utf-8").splitlines()
    assert test in ci, "the README's test command must appear verbatim as a line of .ci/run"
    assert "pytest" in test and "requirements-test.txt" in test and "@anthropic-ai/claude-code" in test
    assert "@openai/codex" in test


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
    flags = [opt for p in cp._build_cli().params for opt in p.opts if opt.startswith("--") and opt not in (
        "--help", "--version")]
    assert len(flags) > 20
    missing = [f for f in flags if f"`{f}`" not in table]
    assert not missing, missing


def test_readme_routing_example_routes_as_the_table_says(tmp_path, monkeypatch):
    import sys
    sys.path.insert(0, ROOT)
    import claude_proxy as cp
    text = Path(ROOT, "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Routing by what a request is"):]
    path = tmp_path / "routing.toml"
    path.write_text(re.search(r"```toml\n(.+?)\n```", section, re.DOTALL).group(1))
    for name in ("DEEPSEEK_KEY_1", "DEEPSEEK_KEY_2", "GROQ_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(name, f"key-{name.lower()}")
    routing = cp.Config(**cp.load_config_file(str(path))).routing
    read = [{"name": "Read", "input_schema": {"type": "object"}}]

    def goes(model: str = "claude-sonnet-5", headers: dict | None = None, **body) -> tuple[str, str, str]:
        route, [(backend, target), *_] = routing.route(model, cp.RequestFacts(
            {"model": model, "messages": [{"role": "user", "content": "hi"}], "tools": read, **body}, headers))
        return route, backend.name, target

    assert goes("claude-haiku-4-5", tools=[]) == ("background", "groq", "llama-3.1-8b-instant")
    assert goes(headers={"x-claude-code-agent-id": "a1"}) == ("subagents", "deepseek", "deepseek-chat")
    assert goes(messages=[{"role": "user", "content": "word " * 70000}]) == ("long-context", "gemini",
                                                                             "gemini-2.5-pro")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert goes(messages=[{"role": "user", "content": [image]}]) == ("images", "gemini", "gemini-2.5-flash")
    assert goes(thinking={"type": "adaptive"}) == ("think", "deepseek", "deepseek-reasoner")
    assert goes(tools=[{"type": "web_search_20250305", "name": "web_search"}]) == (
        "web-search", "groq", "llama-3.3-70b-versatile")
    assert goes() == ("#7", "deepseek", "deepseek-chat")
    assert routing.backends["deepseek"].api_keys == ("key-deepseek_key_1", "key-deepseek_key_2")


def script_metadata() -> dict:
    """The PEP 723 ``script`` block at the top of claude_proxy.py, parsed as the reference implementation does."""
    import tomllib
    text = Path(ROOT, "claude_proxy.py").read_text(encoding="utf-8")
    block = re.search(r"(?m)^# /// script$\s(?P<content>(^#(| .*)$\s)+)^# ///$", text)
    assert block, "no PEP 723 script block"
    content = "".join(line[2:] if line.startswith("# ") else line[1:]
                      for line in block.group("content").splitlines(keepends=True))
    return tomllib.loads(content)


def test_the_script_metadata_matches_requirements_txt():
    meta = script_metadata()
    assert meta["requires-python"] == ">=3.11"
    lines = Path(ROOT, "requirements.txt").read_text(encoding="utf-8").split("# optional")[0].splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert meta["dependencies"] == required  # the two run-time dependencies, with the same bounds


def test_uv_runs_the_file_alone_in_a_fresh_directory(tmp_path):
    """``uv run claude_proxy.py``: the file copied anywhere installs what it needs from its own metadata."""
    import shutil
    import subprocess
    import sys
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        import pytest
        pytest.skip("uv is not installed (it is in requirements-test.txt)")
    shutil.copy(Path(ROOT, "claude_proxy.py"), tmp_path / "claude_proxy.py")
    out = subprocess.run([uv, "run", "--no-project", "claude_proxy.py", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    import claude_proxy as cp
    assert out.returncode == 0 and out.stdout.strip() == f"claude_proxy {cp.__version__}", out.stderr[-2000:]
