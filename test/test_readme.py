"""The README's two commands are the ones CI and users run."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    found = {}
    for label, command in re.findall(r"<!-- (demo|test) command -->\s*```(?:sh|bash)\n(.+?)\n```",
                                      text, flags=re.S):
        found[label] = command.strip()
    return found


def test_readme_has_exactly_two_commands():
    commands = _readme_commands()
    assert set(commands) == {"demo", "test"}, commands
    assert "split-infer demo" in commands["demo"]
    for command in commands.values():
        assert "\n" not in command, "each README command is one line"


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert _readme_commands()["test"] in ci_lines


def test_scripts_named_by_readme_exist_and_are_executable():
    for command in _readme_commands().values():
        for script in re.findall(r"scripts/[\w.]+", command):
            path = REPO / script
            assert path.is_file(), script
            assert path.stat().st_mode & 0o111, f"{script} is not executable"
