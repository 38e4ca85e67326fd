"""The CLI edge: help for every command, and one line per error (no Docker needed)."""

import pytest

from reuseport import cli
from reuseport import engine as engines


@pytest.mark.parametrize("command", ["up", "ps", "logs", "scale", "down", "config"])
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main([command, "--help"])  # returns normally: exit status 0
    assert "Usage: reuseport" in capsys.readouterr().out


def test_usage_error_is_one_line_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["up", "img", "--port", "http"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reuseport: error: Invalid value for '--port'")
    assert "reuseport up --help" in err[0]


def test_unexpected_error_is_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(engines, "connect", broken)
    monkeypatch.delenv("REUSEPORT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["ps"])
    assert exited.value.code == 70
    err = capsys.readouterr().err
    assert err.strip() == (
        "reuseport: internal error: RuntimeError: boom (set REUSEPORT_DEBUG=1 for a traceback)"
    )


def test_a_cpu_limit_below_dockers_minimum_is_one_line_before_any_engine_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable() -> None:
        raise AssertionError("the spec is checked before the engine is reached")

    monkeypatch.setattr(engines, "connect", unreachable)
    with pytest.raises(SystemExit) as exited:
        cli.main(["up", "img", "--cpus", "0.001"])
    assert exited.value.code != 0
    assert capsys.readouterr().err.strip() == "reuseport: error: --cpus must be >= 0.01, got 0.001"
