"""reuseport.toml: every key into ServiceSpec, every bad value named by file, line and key."""

from __future__ import annotations

import re
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import typer

from reuseport import cli, options, projectfile
from reuseport import engine as engines
from reuseport.cli import run
from reuseport.errors import ConfigFileError, EngineUnavailable, InvalidSpec
from reuseport.policies import RolloutPolicy
from reuseport.projectfile import FILE_KEYS, ProjectFile, find, load
from reuseport.spec import ServiceSpec

FULL = """\
# every key, none at its default
[services.web]
image = "myapp:${TAG:-latest}"
replicas = 4
port = 8080
env = { MODE = "prod", DB_URL = "${DB_URL}" }
env-file = [".env"]
user = "1000:1000"
cpus = 0.5
stop-timeout = 7
balance = "least-conn"
hang-window = 3
start-timeout = 30
backoff-initial = 0.25
backoff-max = 20
backoff-reset = 5
health-port-base = 9000
health-path = "/ready"
health-interval = 3
health-timeout = 0.5
health-retries = 2
metrics-port = 9100
metrics-addr = "0.0.0.0"
ready-timeout = 45
max-surge = 2
max-unavailable = 1
min-ready = 1.5
rollout-timeout = 90

[services.api]
image = "api:1"
port = 8081
health-cmd = "test -e /tmp/ok"
"""

# `up`'s flags for the same web service (the env file's values given with -e).
UP_FLAGS = [
    "myapp:latest", "--name", "web", "-n", "4", "-p", "8080", "-e", "MODE=prod",
    "-e", "DB_URL=pg://db", "-e", "FROM_FILE=1", "--user", "1000:1000", "--cpus", "0.5",
    "--stop-timeout", "7", "--balance", "least-conn", "--hang-window", "3",
    "--start-timeout", "30", "--backoff-initial", "0.25", "--backoff-max", "20",
    "--backoff-reset", "5", "--health-port-base", "9000", "--health-path", "/ready",
    "--health-interval", "3", "--health-timeout", "0.5", "--health-retries", "2",
    "--metrics-port", "9100", "--metrics-addr", "0.0.0.0", "--ready-timeout", "45",
]  # fmt: skip


def write(tmp_path: Path, text: str, name: str = "reuseport.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def full(tmp_path: Path, environ: dict[str, str] | None = None) -> ProjectFile:
    write(tmp_path, "FROM_FILE=1\nMODE=dev\n", ".env")
    return load(write(tmp_path, FULL), {"DB_URL": "pg://db"} if environ is None else environ)


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as raised:
        load(path, environ or {})
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 2
    return message.removeprefix(f"{tmp_path}/")


def test_every_key_of_a_file_is_the_spec_up_builds_from_the_same_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[ServiceSpec] = []

    def spy(**kwargs: object) -> ServiceSpec:
        built.append(options.build_spec(**kwargs))  # type: ignore[arg-type]
        return built[-1]

    def no_engine() -> None:
        raise EngineUnavailable("no engine in unit tests")

    monkeypatch.setattr(run, "build_spec", spy)
    monkeypatch.setattr(engines, "connect", no_engine)
    with pytest.raises(SystemExit):
        cli.main(["up", *UP_FLAGS])
    web = full(tmp_path).services["web"]
    # `up` takes no rollout policy: rollout's flags are the file's, checked on their own.
    assert replace(web.spec, rollout=RolloutPolicy()) == built[0]
    assert web.spec.rollout == RolloutPolicy(max_surge=2, max_unavailable=1, min_ready_s=1.5)
    assert (web.ready_timeout, web.rollout_timeout, web.line) == (45, 90, 2)


def test_absent_keys_take_ups_defaults_and_services_keep_the_files_order(
    tmp_path: Path,
) -> None:
    project = full(tmp_path)
    assert list(project.services) == ["web", "api"]
    api = project.services["api"]
    assert replace(api.spec, health=replace(api.spec.health, cmd=None)) == options.build_spec(
        name="api", image="api:1", port=8081
    )
    assert api.spec.health.cmd == "test -e /tmp/ok"
    assert (api.ready_timeout, api.rollout_timeout, api.line) == (60, 120, 30)


def test_file_keys_are_the_flags_of_up_and_rollout() -> None:
    commands = typer.main.get_command(cli.app).commands  # type: ignore[attr-defined]
    flags = {
        opt.removeprefix("--")
        for command in ("up", "rollout")
        for param in commands[command].params
        for opt in param.opts
        if opt.startswith("--")
    }
    not_in_files = {"name", "detach", "state-dir", "undo", "tcp-migrate-req", "timeout"}
    not_in_files |= {"file", "dry-run"}  # up -f FILE --dry-run: how a file is applied
    assert flags - not_in_files == set(FILE_KEYS) - {"env-file", "rollout-timeout"}


def test_spec_options_round_trip_through_build_spec(tmp_path: Path) -> None:
    for entry in full(tmp_path).services.values():
        values = options.spec_options(entry.spec)
        values["env"] = tuple(sorted(values["env"].items()))  # type: ignore[attr-defined]
        kwargs = {key.replace("-", "_"): value for key, value in values.items()}
        assert options.build_spec(name=entry.name, **kwargs) == entry.spec  # type: ignore[arg-type]


def test_env_wins_over_env_files_and_later_files_over_earlier(tmp_path: Path) -> None:
    write(tmp_path, "# comment\n\nexport A=1\nB = 'two words'\nC=x=y\nD=\"$HOME\"\n", "one.env")
    write(tmp_path, "A=2\nE=\n", "two.env")
    path = write(
        tmp_path,
        """\
        [services.s]
        image = "img"
        env-file = ["one.env", "two.env"]
        env = { E = "from-env" }
        """,
    )
    env = dict(load(path, {}).services["s"].spec.env)
    assert env == {"A": "2", "B": "two words", "C": "x=y", "D": "$HOME", "E": "from-env"}
    write(tmp_path, "[services.s]\nimage = 'img'\nenv-file = 'two.env'\n")
    assert dict(load(path, {}).services["s"].spec.env) == {"A": "2", "E": ""}


@pytest.mark.parametrize(
    ("environ", "image"),
    [
        ({}, "app:latest"),
        ({"TAG": ""}, "app:latest"),  # :- also when empty
        ({"TAG": "v2"}, "app:v2"),
    ],
)
def test_colon_dash_default_applies_when_unset_or_empty(
    tmp_path: Path, environ: dict[str, str], image: str
) -> None:
    path = write(tmp_path, '[services.s]\nimage = "app:${TAG:-latest}"\n')
    assert load(path, environ).services["s"].spec.image == image


@pytest.mark.parametrize(("environ", "user"), [({}, "1000"), ({"U": ""}, None), ({"U": "7"}, "7")])
def test_dash_default_applies_only_when_unset(
    tmp_path: Path, environ: dict[str, str], user: str | None
) -> None:
    path = write(tmp_path, '[services.s]\nimage = "img"\nenv = { U = "${U-1000}" }\n')
    assert dict(load(path, environ).services["s"].spec.env).get("U", None) == (user or "")


def test_dollar_dollar_is_a_dollar_and_bare_names_interpolate(tmp_path: Path) -> None:
    path = write(tmp_path, '[services.s]\nimage = "img"\nenv = { P = "$$HOME is ${X}-$X $5" }\n')
    assert dict(load(path, {"X": "x"}).services["s"].spec.env)["P"] == "$HOME is x-x $5"


def test_a_missing_variable_names_file_line_key_and_variable(tmp_path: Path) -> None:
    text = '[services.web]\nimage = "img"\n\nenv = { DB_URL = "${DB_URL}" }\n'
    assert error_of(tmp_path, text) == (
        "reuseport.toml:4: services.web.env.DB_URL: variable DB_URL is not set "
        "(set it, or give a default: ${DB_URL:-default})"
    )


HEAD = '[services.web]\nimage = "img"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD + "replicas = 0\n", "3: services.web.replicas: must be between 1 and 256, got 0"),
        (HEAD + 'replicas = "4"\n', "3: services.web.replicas: must be an integer, got string '4'"),
        (HEAD + "replicas = true\n", "3: services.web.replicas: must be an integer, got boolean"),
        (HEAD + "cpus = '1'\n", "3: services.web.cpus: must be a float, got string '1'"),
        (HEAD + "port = 0\n", "3: services.web.port: must be between 1 and 65535, got 0"),
        (HEAD + "hang-window = 0.5\n", "3: services.web.hang-window: must be 0 (off) or >= 1"),
        (
            HEAD + "health-interval = 1\nhealth-timeout = 2\n",
            "4: services.web.health-timeout: must be > 0 and <= health-interval (1), got 2",
        ),
        (HEAD + "health-interval = 0.2\n", "3: services.web.health-interval: must be >= 0.5"),
        (HEAD + "backoff-initial = 9\nbackoff-max = 1\n", "3: services.web.backoff-initial:"),
        (HEAD + "backoff-reset = 0\n", "3: services.web.backoff-reset: must be > 0 seconds"),
        (HEAD + "max-surge = 0\n", "3: services.web.max-surge: cannot be 0 when max-unavail"),
        (HEAD + "max-unavailable = -1\n", "3: services.web.max-unavailable: must be >= 0"),
        (HEAD + "min-ready = -1\n", "3: services.web.min-ready: must be >= 0, got -1"),
        (HEAD + "stop-timeout = 4000\n", "3: services.web.stop-timeout: must be 0-3600"),
        (HEAD + "start-timeout = 0\n", "3: services.web.start-timeout: must be >= 1 second"),
        (HEAD + "balance = 'random'\n", "3: services.web.balance: must be one of round-robin"),
        (HEAD + "user = 'a b'\n", "3: services.web.user: must be UID[:GID] or a user name"),
        (HEAD + "health-path = 'x'\n", "3: services.web.health-path: must start with '/'"),
        (HEAD + "health-retries = 0\n", "3: services.web.health-retries: must be >= 1, got 0"),
        (HEAD + "health-cmd = ' '\n", "3: services.web.health-cmd: must not be empty"),
        (
            HEAD + "health-port-base = 9000\nhealth-cmd = 'true'\n",
            "4: services.web.health-cmd: cannot be set with health-port-base: choose one",
        ),
        (HEAD + "metrics-port = 8080\n", "3: services.web.metrics-port: 8080 is the service's"),
        (
            HEAD + "port = 9003\nhealth-port-base = 9000\n",
            "3: services.web.port: 9003 falls among the health ports 9001-9005",
        ),
        (HEAD + "ready-timeout = 0\n", "3: services.web.ready-timeout: must be > 0, got 0"),
        (HEAD + "rollout-timeout = -1\n", "3: services.web.rollout-timeout: must be > 0, got -1"),
        (HEAD + "replica = 3\n", "3: services.web.replica: unknown key (did you mean 'replicas'?)"),
        (HEAD + "env = ['A=1']\n", "3: services.web.env: must be a table of strings, got array"),
        (
            HEAD + "env = 'PW=secret'\n",
            "3: services.web.env: must be a table of strings, got string",
        ),
        (HEAD + "env = { A = 1 }\n", "3: services.web.env.A: must be a string, got integer"),
        (HEAD + "env = { PORT = '1' }\n", "3: services.web.env: PORT is reserved"),
        (HEAD + "env-file = 3\n", "3: services.web.env-file: must be a path or an array of"),
        (
            HEAD + "env-file = 'nope.env'\n",
            "3: services.web.env-file: cannot read env file ",
        ),
        ("[services.web]\nport = 8080\n", "1: services.web.image: missing: every service needs"),
        ('[services.web]\nimage = ""\n', "2: services.web.image: must be an image reference"),
        ("[services]\nweb = 3\n", "2: services.web: must be a table ([services.web]), got integer"),
        ("[services.-x]\nimage = 'i'\n", "1: services.-x: invalid service name '-x'"),
        ("[service.web]\nimage = 'i'\n", "1: service: unknown key (did you mean 'services'?)"),
        ("services = 3\n", "1: services: must hold one [services.NAME] table per service"),
        ("[services]\n", "1: services: must hold one [services.NAME] table per service"),
        ("# nothing\n", "1: no [services] table: declare each service as [services.NAME]"),
        (HEAD + "replicas = = 2\n", "3: invalid TOML: Invalid value at column 12"),
        (
            HEAD + "[services.api]\nimage = 'a'\nport = 8080\n",
            "5: services.api.port: 8080 is also services.web's port: one port per service",
        ),
    ],
)
def test_every_bad_value_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"reuseport.toml:{expected}")
    assert "secret" not in message  # an env value is never shown, whatever is wrong


def test_a_malformed_env_file_line_names_the_env_file_and_its_line(tmp_path: Path) -> None:
    write(tmp_path, "A=1\n\nnot a pair secret\n", "app.env")
    message = error_of(tmp_path, HEAD + "env-file = ['app.env']\n")
    assert message == (
        f"reuseport.toml:3: services.web.env-file: {tmp_path}/app.env:3: "
        "expected KEY=VALUE with KEY like [A-Za-z_][A-Za-z0-9_]*"
    )
    assert "secret" not in message


def test_keys_are_found_in_subtables_dotted_keys_and_inline_tables(tmp_path: Path) -> None:
    text = """\
    [services.web]
    image = "img"
    note = '''
    replicas = 0
    '''
    """
    assert error_of(tmp_path, text).startswith("reuseport.toml:3: services.web.note: unknown")
    text = "[services.web]\nimage = 'i'\n[services.web.env]\nA = 'x'\nB = 2\n"
    assert error_of(tmp_path, text).startswith("reuseport.toml:5: services.web.env.B: must be")
    text = "[services]\napi = { image = 'i' }\nweb.image = 'i'\nweb.replicas = 0\n"
    assert error_of(tmp_path, text).startswith("reuseport.toml:4: services.web.replicas:")
    text = "[services]\napi = { image = 'i', replicas = 0 }\n"
    assert error_of(tmp_path, text).startswith("reuseport.toml:2: services.api.replicas:")


def test_select_keeps_the_order_given_and_names_the_files_services(tmp_path: Path) -> None:
    project = full(tmp_path)
    assert [e.name for e in project.select([])] == ["web", "api"]
    assert [e.name for e in project.select(["api", "web", "api"])] == ["api", "web"]
    with pytest.raises(ConfigFileError, match=r"no service named 'db' \(its services: web, api\)"):
        project.select(["db"])


def test_find_prefers_the_explicit_file_and_else_looks_in_the_directory(tmp_path: Path) -> None:
    assert find(None, tmp_path) is None
    with pytest.raises(ConfigFileError, match=re.escape(f"{tmp_path}/other.toml: no such file")):
        find(tmp_path / "other.toml", tmp_path)
    path = write(tmp_path, HEAD)
    assert find(None, tmp_path) == path
    assert find(path, None) == path


def test_cli_messages_keep_naming_flags_and_the_file_gets_the_key() -> None:
    with pytest.raises(InvalidSpec) as raised:
        options.build_spec(image="img", health_interval=1, health_timeout=2)
    assert raised.value.message == (
        "--health-timeout must be > 0 and <= --health-interval (1), got 2"
    )
    assert raised.value.key == "health-timeout"
    assert raised.value.detail == "must be > 0 and <= health-interval (1), got 2"
    with pytest.raises(InvalidSpec) as raised:
        options.build_spec(image="img", replicas=0)
    assert raised.value.message == "replicas must be between 1 and 256, got 0"
    assert issubclass(projectfile.ConfigFileError, InvalidSpec)


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${A:-${B:-c}}", {}, "c"),
        ("${A:-${B:-c}}", {"B": "b"}, "b"),
        ("${A-}", {}, ""),
        ("a$", {}, "a$"),
        ("$$$$", {}, "$$"),
    ],
)
def test_defaults_nest_and_stray_dollars_stay(
    value: str, environ: dict[str, str], expected: str
) -> None:
    from reuseport.interpolate import escape, interpolate

    assert interpolate(value, environ) == expected
    assert interpolate(escape(expected), {}) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("${A", "unterminated '${'"), ("${A+x}", "invalid reference '${A+x}'"), ("${}", "invalid")],
)
def test_malformed_references_are_errors_at_the_key(
    tmp_path: Path, value: str, fragment: str
) -> None:
    message = error_of(tmp_path, f'[services.web]\nimage = "img"\nuser = "{value}"\n')
    assert message.startswith(f"reuseport.toml:3: services.web.user: {fragment}")


def test_the_readme_example_sets_every_key_and_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Configuration file") :]
    example = section[section.index("```toml\n") + 8 : section.index("```\n", 8)]
    written = {line.split("=")[0].strip("# ") for line in example.splitlines() if " = " in line}
    assert written == set(FILE_KEYS)  # health-cmd commented out: it excludes health-port-base
    write(tmp_path, "TOKEN=x\n", ".env")
    project = load(write(tmp_path, example), {"DB_URL": "pg://db"})
    assert list(project.services) == ["web", "api"]
    assert project.services["web"].spec.image == "myapp:latest"


@pytest.mark.parametrize(
    ("environ", "port", "window"),
    [({}, 8080, 5.0), ({"PORT": "9000", "HANG": "2.5"}, 9000, 2.5)],
)
def test_a_number_key_may_come_from_an_interpolated_string(
    tmp_path: Path, environ: dict[str, str], port: int, window: float
) -> None:
    path = write(
        tmp_path,
        '[services.s]\nimage = "img"\nport = "${PORT:-8080}"\nhang-window = "${HANG:-5}"\n',
    )
    spec = load(path, environ).services["s"].spec
    assert (spec.port, spec.health.hang_window) == (port, window)


def test_an_interpolated_number_that_is_not_one_names_what_it_read(tmp_path: Path) -> None:
    text = '[services.web]\nimage = "img"\nport = "${PORT}"\n'
    assert error_of(tmp_path, text, {"PORT": "http"}) == (
        "reuseport.toml:3: services.web.port: must be an integer, got 'http' from '${PORT}'"
    )
    # A plain string is still the wrong type: only an interpolation is read as a number.
    assert "must be an integer" in error_of(tmp_path, '[services.web]\nimage = "i"\nport = "80"\n')


@pytest.mark.parametrize(
    ("value", "environ", "said"),
    [
        ("${DB:?set DB to the database URL}", {}, "variable DB is not set or empty: set DB to"),
        ("${DB:?}", {"DB": ""}, "variable DB is not set or empty: required"),
        ("${DB?no DB}", {}, "variable DB is not set: no DB"),
    ],
)
def test_question_mark_references_fail_with_the_files_message(
    value: str, environ: dict[str, str], said: str
) -> None:
    from reuseport.interpolate import InterpolationError, interpolate

    with pytest.raises(InterpolationError, match=said.replace("?", r"\?")):
        interpolate(value, environ)


def test_question_mark_references_give_the_value_when_set() -> None:
    from reuseport.interpolate import interpolate

    assert interpolate("${DB:?x}", {"DB": "pg"}) == "pg"
    assert interpolate("${DB?x}", {"DB": ""}) == ""
