"""The README stays true: every setting documented with its default, every command exists."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from consult.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _config_rows() -> dict[str, str]:
    """Variable -> default cell of the README's configuration table."""
    rows = {}
    for line in _section("Configuration").splitlines():
        match = re.match(r"^\| `(CONSULT_[A-Z0-9_]+)` \| ([^|]*) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_every_setting_is_documented() -> None:
    documented = set(_config_rows())
    fields = {f"CONSULT_{name.upper()}" for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from the README"
    assert documented - fields == set(), "README documents settings that do not exist"


def _shown(value: object) -> str:
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return value.as_posix() if value.is_absolute() else f"./{value.as_posix()}"
    return str(value)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_documented_defaults_are_the_real_ones(name: str) -> None:
    cell = _config_rows()[f"CONSULT_{name.upper()}"]
    match = re.match(r"`([^`]*)`", cell)
    documented = match.group(1) if match else cell
    assert documented == _shown(Settings.model_fields[name].default)


def _documented_commands() -> dict[tuple[str, ...], set[str]]:
    """Each `consult ...` command the README names -> the options it shows."""
    commands: dict[tuple[str, ...], set[str]] = {}
    for text in re.findall(r"`consult ([^`]+)`", README):
        words: list[str] = []
        tokens = text.split()
        while tokens and re.fullmatch(r"[a-z][a-z-]*", tokens[0]):
            words.append(tokens.pop(0))
        options = {m for token in tokens for m in re.findall(r"--[a-z][a-z-]*", token)}
        commands.setdefault(tuple(words), set()).update(options)
    return commands


def test_readme_names_the_commands_of_the_issue() -> None:
    commands = _documented_commands()
    for required in [
        ("serve",),
        ("receive",),
        ("web",),
        ("worker",),
        ("demo",),
        ("hospitals", "add"),
        ("peers", "add"),
        ("users", "add"),
        ("export",),
    ]:
        assert required in commands, f"README does not document consult {' '.join(required)}"
    assert {"--hospital", "--ae", "--host", "--port"} <= commands[("peers", "add")]
    assert {"--hospital", "--role", "--password-stdin"} <= commands[("users", "add")]
    assert "--out" in commands[("export",)]


def test_every_documented_command_exists(capsys: pytest.CaptureFixture[str]) -> None:
    from consult.cli.main import main

    for words, options in _documented_commands().items():
        name = " ".join(("consult", *words))
        with pytest.raises(SystemExit) as exit_info:
            main([*words, "--help"])  # argparse prints the help and exits before running
        out, err = capsys.readouterr()
        assert exit_info.value.code == 0, f"{name} --help failed:\n{err}"
        for option in options:
            assert option in out, f"{name} has no option {option}"


def test_setup_scripts_exist_and_ci_runs_the_readme_test_command() -> None:
    for script in ["scripts/serve", "scripts/test", "scripts/check", ".ci/run"]:
        path = ROOT / script
        assert path.is_file(), script
        assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "scripts/serve" in _section("Quick start")
    assert "scripts/test" in _section("Tests")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "exec scripts/test" in ci
    assert "CONSULT_TEST_DATABASE_URL=" in ci


def test_changelog_has_the_current_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(version)} \(", changelog, re.M), version


def test_compose_file_runs_documented_commands_with_documented_settings() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"minio", "postgres", "receiver", "web", "worker"} <= set(services)
    documented = set(_config_rows())
    for name in ("receiver", "web", "worker"):
        service = services[name]
        command = service["command"]
        words = command.split() if isinstance(command, str) else list(command)
        assert words[0] == "consult"
        assert (words[1],) in _documented_commands()
        variables = set(service.get("environment", {}))
        assert variables <= documented, f"{name} sets undocumented variables"
        assert {"CONSULT_DATABASE_URL", "CONSULT_S3_ENDPOINT"} <= variables
