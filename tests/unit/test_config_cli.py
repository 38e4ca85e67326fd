"""`reuseport config`: the effective configuration, --json, --check, redaction."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from reuseport import cli
from reuseport.projectfile import load
from reuseport.spec import redact_value

FILE = """\
[services.web]
image = "app:${TAG:-1}"
replicas = 3
env = { DB_PASSWORD = "${PW}", PRICE = "$$5" }
env-file = "app.env"

[services.api]
image = "api:1"
port = 8081
health-cmd = "true"
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "reuseport.toml").write_text(FILE)
    (tmp_path / "app.env").write_text("TOKEN=t0ps3cret\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PW", "hunter2")
    monkeypatch.delenv("TAG", raising=False)
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        cli.main(args)
        code = 0
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_revealed_toml_loads_back_to_the_same_services(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["config", "--reveal"], capsys)
    assert code == 0
    (project_dir / "printed.toml").write_text(out)
    printed = load(project_dir / "printed.toml", {})  # nothing left to interpolate
    original = load(project_dir / "reuseport.toml")
    assert [(e.spec, e.ready_timeout, e.rollout_timeout) for e in printed.services.values()] == [
        (e.spec, e.ready_timeout, e.rollout_timeout) for e in original.services.values()
    ]
    assert dict(printed.services["web"].spec.env) == {
        "DB_PASSWORD": "hunter2",
        "PRICE": "$5",
        "TOKEN": "t0ps3cret",
    }


def test_env_values_are_redacted_unless_revealed(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(["config"], capsys)
    assert "hunter2" not in out and "t0ps3cret" not in out
    web = tomllib.loads(out)["services"]["web"]
    assert web["env"]["DB_PASSWORD"] == redact_value("hunter2")
    assert web["image"] == "app:1" and web["replicas"] == 3 and web["health-timeout"] == 1.0
    assert "env-file" not in web  # merged into env
    _, out, _ = run(["config", "--json"], capsys)
    assert "hunter2" not in out
    services = json.loads(out)["services"]
    assert services["api"]["health-cmd"] == "true" and services["api"]["metrics-port"] is None
    assert services["web"]["env"]["TOKEN"] == redact_value("t0ps3cret")
    _, out, _ = run(["config", "--json", "--reveal", "web"], capsys)
    services = json.loads(out)["services"]
    assert list(services) == ["web"] and services["web"]["env"]["TOKEN"] == "t0ps3cret"


def test_check_prints_one_line(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "--check"], capsys) == (
        0,
        "reuseport.toml: 2 services OK: web, api\n",
        "",
    )
    code, out, _ = run(
        ["config", "--check", "-f", str(project_dir / "reuseport.toml"), "api"], capsys
    )
    assert (code, out) == (0, f"{project_dir}/reuseport.toml: 1 service OK: api\n")


def test_an_invalid_file_is_one_line_and_exit_code_2(
    project_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(["config", "nope"], capsys)
    assert code == 2 and "no service named 'nope' (its services: web, api)" in err
    monkeypatch.delenv("PW")
    code, out, err = run(["config", "--check"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "reuseport: error: reuseport.toml:4: services.web.env.DB_PASSWORD: variable PW is not "
        "set (set it, or give a default: ${PW:-default})\n"
    )


def test_no_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["config"], capsys)
    assert code == 2
    assert err == (
        f"reuseport: error: no reuseport.toml in {tmp_path} (give a project file with -f FILE)\n"
    )
    code, _, err = run(["config", "-f", "other.toml"], capsys)
    assert (code, err) == (2, "reuseport: error: other.toml: no such file\n")
