"""The benchmark driven from a project file: each setup's copy of the user's service, and
the options that go with --file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from loadtest.__main__ import FILE_PARTS, parse_args
from loadtest.harness.errors import SetupError
from loadtest.harness.fromfile import load_service, setup_file
from reuseport import projectfile

FILE = """
[services.web]
image = "shop:${TAG:-3}"
replicas = 3
port = 8080
hang-window = 2.5
metrics-port = 9100
health-port-base = 9200
env = { TOKEN = "s3cr$$t", MODE = "${MODE}" }
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODE", "fast")
    monkeypatch.delenv("TAG", raising=False)
    path = tmp_path / "reuseport.toml"
    path.write_text(FILE)
    return path


def test_a_setup_copy_loads_back_to_the_users_spec_with_only_the_bench_changes(
    project: Path, tmp_path: Path
) -> None:
    entry = load_service(project, None)
    copy = setup_file(
        entry, "bench-tp-1-42", 18100, ["--balance", "round-robin"], 30.0, 19100, tmp_path
    )
    (loaded,) = projectfile.load(copy, environ={}).services.values()
    spec = loaded.spec
    assert spec.name == "bench-tp-1-42" and spec.port == 18100
    assert spec.balance == "round-robin" and spec.metrics_port is None
    assert spec.health.port_base == 19100 and loaded.ready_timeout == 30.0
    # Everything else is the user's: image, count, hang window and env ($ kept as written).
    assert spec.image == "shop:3" and spec.replicas == 3 and spec.health.hang_window == 2.5
    assert dict(spec.env) == {"TOKEN": "s3cr$t", "MODE": "fast"}


def test_the_setup_copy_holds_the_env_so_only_its_owner_reads_it(
    project: Path, tmp_path: Path
) -> None:
    copy = setup_file(load_service(project, None), "b-1", 18100, [], 30.0, 19100, tmp_path)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_flags_become_typed_keys_and_unknown_ones_are_a_programming_error(
    project: Path, tmp_path: Path
) -> None:
    entry = load_service(project, None)
    copy = setup_file(entry, "b-1", 1, ["--backoff-reset", "1.5"], 30.0, 19100, tmp_path)
    assert projectfile.load(copy, environ={}).services["b-1"].spec.backoff.reset_after == 1.5
    with pytest.raises(ValueError):
        setup_file(entry, "b-1", 1, ["--image", "x"], 30.0, 19100, tmp_path)
    with pytest.raises(ValueError):
        setup_file(entry, "b-1", 1, ["--balance"], 30.0, 19100, tmp_path)


def test_a_file_of_several_services_needs_the_one_named(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(
        '[services.a]\nimage = "x"\nport = 1000\n[services.b]\nimage = "y"\nport = 1001\n'
    )
    with pytest.raises(SetupError, match="name the one to measure with --service"):
        load_service(path, None)
    assert load_service(path, "b").spec.image == "y"
    with pytest.raises(SetupError, match="no service named 'c'"):
        load_service(path, "c")
    with pytest.raises(SetupError, match="no such file"):
        load_service(tmp_path / "missing.toml", None)


def test_file_options_take_the_files_count_and_only_the_parts_a_service_can_run(
    project: Path,
) -> None:
    args = parse_args(["--file", str(project)])
    assert args.only == ",".join(FILE_PARTS) and args.replicas == 3
    assert args.project.name == "web" and args.out.name == "file-web"
    assert parse_args(["--file", str(project), "--replicas", "2"]).replicas == 2
    assert parse_args([]).project is None and parse_args([]).replicas == 4


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--only", "throughput,rollout"], "the rollout part(s) need the demo images"),
        (["--update-readme"], "README's figures are the demo's"),
    ],
)
def test_file_options_that_cannot_go_together_are_one_line_errors(
    project: Path, argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--file", str(project), *argv])
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_service_without_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--service", "web"])
    assert "--service goes with --file" in capsys.readouterr().err
