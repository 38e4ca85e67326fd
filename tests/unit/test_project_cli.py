"""`up`/`down`/`top`/`logs` with and without a project file, before any engine call: which
mode a command line means, and one line for each misuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from reuseport import cli
from reuseport import engine as engines


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> None:
        raise AssertionError("no engine call expected")

    monkeypatch.setattr(engines, "connect", unreachable)


def one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reuseport: error: "), lines
    return lines[0]


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "reuseport.toml").write_text('[services.web]\nimage = "app:1"\nport = 8080\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_flag_of_up_image_with_a_file_is_refused_naming_it(
    in_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(["up", "-n", "3"], capsys)
    assert "--replicas cannot be used with a project file" in line


def test_an_unknown_service_name_names_the_files_services(
    in_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "its services: web" in one_line_error(["up", "-f", "reuseport.toml", "db"], capsys)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["up", "a:1", "b"], "unexpected extra arguments 'b'"),
        (["up"], "missing IMAGE"),
        (["up", "app:1", "--dry-run"], "--dry-run needs a project file"),
        (["down"], "missing NAME"),
        (["down", "a", "b"], "down takes one NAME"),
        (["top"], "missing NAME (or a project file: -f FILE"),
        (["logs"], "missing NAME (or a project file: --file FILE"),
        (["up", "-f", "nope.toml"], "nope.toml: no such file"),
    ],
)
def test_without_a_file_each_misuse_is_one_line(
    argv: list[str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no reuseport.toml here
    assert says in one_line_error(argv, capsys)
