import json
import re
from dataclasses import replace

import pytest

from reuseport.errors import InvalidSpec
from reuseport.policies import BackoffPolicy, HealthPolicy
from reuseport.spec import (
    ServiceSpec,
    default_name,
    differences,
    parse_env,
    redact_value,
)


def make(**overrides: object) -> ServiceSpec:
    fields: dict[str, object] = {"name": "demo", "image": "reuseport-demo:latest"}
    fields.update(overrides)
    return ServiceSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("replicas", [0, -1, 257])
def test_replicas_out_of_range_is_refused(replicas: int) -> None:
    with pytest.raises(InvalidSpec, match="replicas must be between 1 and 256"):
        make(replicas=replicas)


@pytest.mark.parametrize("replicas", [1, 256])
def test_replicas_bounds_are_accepted(replicas: int) -> None:
    assert make(replicas=replicas).replicas == replicas


@pytest.mark.parametrize("port", [0, 65536, -5])
def test_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(InvalidSpec, match="port must be between 1 and 65535"):
        make(port=port)


@pytest.mark.parametrize("item", ["FOO", "=x", "1A=b", "A-B=c", ""])
def test_malformed_env_is_refused(item: str) -> None:
    with pytest.raises(InvalidSpec, match="malformed -e"):
        parse_env([item])


def test_env_parses_values_with_equals_and_later_wins() -> None:
    assert parse_env(["A=1", "B=x=y", "A=2", "C="]) == (("A", "2"), ("B", "x=y"), ("C", ""))


@pytest.mark.parametrize("key", ["PORT", "REPLICA"])
def test_reserved_env_is_refused(key: str) -> None:
    with pytest.raises(InvalidSpec, match="reserved"):
        make(env=((key, "1"),))


@pytest.mark.parametrize("user", ["1000", "1000:1000", "app", "app:staff", "root"])
def test_user_forms_are_accepted(user: str) -> None:
    assert make(user=user).user == user


@pytest.mark.parametrize("user", ["", "10 00", "a:b:c", "-1"])
def test_bad_user_is_refused(user: str) -> None:
    with pytest.raises(InvalidSpec, match="--user"):
        make(user=user)


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("reuseport-demo:latest", "reuseport-demo"),
        ("myapp", "myapp"),
        ("registry.local:5000/team/myapp:v2", "myapp"),
        ("myapp@sha256:" + "a" * 64, "myapp"),
    ],
)
def test_default_name_is_the_repository_name(image: str, name: str) -> None:
    assert default_name(image) == name


def test_invalid_name_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="invalid service name"):
        make(name="bad name")


def test_hash_ignores_count_and_supervision_settings() -> None:
    base = make()
    assert base.spec_hash() == make(replicas=7, stop_timeout=3).spec_hash()
    assert base.spec_hash() == make(backoff=BackoffPolicy(1, 2, 3)).spec_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"image": "reuseport-demo:v2"},
        {"port": 9000},
        {"env": (("A", "1"),)},
        {"user": "1000"},
        {"cpus": 0.5},
    ],
)
def test_hash_covers_the_container_template(change: dict[str, object]) -> None:
    assert make().spec_hash() != make(**change).spec_hash()


@pytest.mark.parametrize("cpus", [0, -1, 0.005])
def test_cpus_below_dockers_minimum_is_refused(cpus: float) -> None:
    with pytest.raises(InvalidSpec, match="--cpus must be >= 0.01"):
        make(cpus=cpus)


def test_cpus_is_in_the_template_only_when_set() -> None:
    assert "cpus" not in make().template()
    assert make(cpus=0.25).template()["cpus"] == 0.25
    assert differences(make(), make(cpus=0.25)) == ["cpus: (no limit) -> 0.25"]


def test_json_round_trip_keeps_cpus_and_reads_specs_without_it() -> None:
    spec = make(cpus=1.5)
    assert ServiceSpec.from_json(spec.to_json()) == spec
    older = json.loads(make().to_json())
    del older["cpus"]
    assert ServiceSpec.from_json(json.dumps(older)) == make()


def test_json_round_trip() -> None:
    spec = make(env=(("A", "1"),), user="1000", replicas=3, backoff=BackoffPolicy(0.1, 1, 2))
    assert ServiceSpec.from_json(spec.to_json()) == spec


def test_differences_name_each_changed_field() -> None:
    diff = differences(make(), make(image="reuseport-demo:v2", env=(("A", "1"),)))
    assert diff == ["image: reuseport-demo:latest -> reuseport-demo:v2", "env A added"]


def test_env_differences_name_the_variables_never_their_values() -> None:
    running = make(env=(("DB_PASSWORD", "hunter2"), ("DEBUG", "1")))
    wanted = make(env=(("DB_PASSWORD", "s3cret"), ("MODE", "fast")))
    diff = differences(running, wanted)
    assert diff == ["env DB_PASSWORD differs", "env DEBUG removed", "env MODE added"]
    assert differences(running.redacted(), wanted.redacted()) == diff
    assert not any(secret in "".join(diff) for secret in ("hunter2", "s3cret", "fast"))


def test_replica_env_carries_port_and_index() -> None:
    env = make(port=9001, env=(("X", "y"),)).replica_env(3)
    assert env == {"X": "y", "PORT": "9001", "REPLICA": "3"}


def test_backoff_policy_validation() -> None:
    with pytest.raises(InvalidSpec):
        BackoffPolicy(initial=5, maximum=1)
    with pytest.raises(InvalidSpec):
        BackoffPolicy(reset_after=0)


def test_json_from_a_newer_writer_is_read_without_its_unknown_fields() -> None:
    import json

    data = json.loads(make().to_json())
    data["some_future_field"] = {"x": 1}
    assert ServiceSpec.from_json(json.dumps(data)) == make()


def test_health_ports_must_not_cover_the_service_or_metrics_port() -> None:
    from reuseport.policies import HealthPolicy

    with pytest.raises(InvalidSpec, match="falls among the health ports 9001-9009"):
        ServiceSpec("s", "img", replicas=4, port=9003, health=HealthPolicy(port_base=9000))
    with pytest.raises(InvalidSpec, match="--metrics-port 9009"):
        ServiceSpec(
            "s",
            "img",
            replicas=4,
            port=8080,
            metrics_port=9009,
            health=HealthPolicy(port_base=9000),
        )
    ServiceSpec("s", "img", replicas=4, port=9010, health=HealthPolicy(port_base=9000))
    assert (
        ServiceSpec("s", "img", health=HealthPolicy(port_base=9000)).replica_env(1, 9001)[
            "HEALTH_PORT"
        ]
        == "9001"
    )


def test_redacted_spec_keeps_everything_but_env_values() -> None:
    spec = make(env=(("DB_PASSWORD", "hunter2"), ("EMPTY", "")), replicas=3, user="1000")
    redacted = spec.redacted()
    assert "hunter2" not in redacted.to_json()
    assert dict(redacted.env)["DB_PASSWORD"] == redact_value("hunter2")
    assert redact_value("hunter2").startswith("sha256:") and len(redact_value("hunter2")) == 19
    assert redact_value("hunter2") != redact_value("hunter3")
    assert replace(redacted, env=spec.env) == spec
    assert redacted.redacted() == redacted  # idempotent: a label spec can be redacted again
    assert spec.spec_hash() == make(env=spec.env, replicas=3, user="1000").spec_hash()
    assert redacted.spec_hash() != spec.spec_hash()
    assert ServiceSpec.from_json(redacted.to_json()) == redacted


@pytest.mark.parametrize(
    ("health", "fragment"),
    [
        ({"hang_window": 0.5}, "--hang-window must be 0 (off) or >= 1 second, got 0.5"),
        ({"hang_window": -1}, "--hang-window must be 0 (off)"),
        ({"interval": 0.2, "timeout": 0.1}, "--health-interval must be >= 0.5 seconds, got 0.2"),
        ({"timeout": 0}, "--health-timeout must be > 0 and <= --health-interval (2), got 0"),
        ({"interval": 1, "timeout": 1.5}, "--health-timeout must be > 0 and <= --health-interval"),
        ({"port_base": 0}, "--health-port-base must be between 1 and 65534, got 0"),
    ],
)
def test_health_lower_bounds_are_one_line_errors(health: dict, fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(fragment)) as raised:
        HealthPolicy(**health)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2


@pytest.mark.parametrize(
    "health", [{"hang_window": 0}, {"hang_window": 1}, {"interval": 0.5, "timeout": 0.5}]
)
def test_health_bounds_are_inclusive(health: dict) -> None:
    HealthPolicy(**health)


@pytest.mark.parametrize(
    ("initial", "maximum", "fragment"),
    [
        (0.05, 1, "0.1 <= --backoff-initial (0.05) <= --backoff-max (1)"),
        (5, 1, "--backoff-initial (5) <= --backoff-max (1)"),
    ],
)
def test_backoff_bounds(initial: float, maximum: float, fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(fragment)):
        BackoffPolicy(initial=initial, maximum=maximum)
    BackoffPolicy(initial=0.1, maximum=0.1)


def test_port_range_covers_every_index_a_successor_each_and_the_surge() -> None:
    assert HealthPolicy(port_base=9000).port_range(4, 1) == range(9001, 9010)
    assert HealthPolicy(port_base=9000).port_range(1, 0) == range(9001, 9003)
    assert not HealthPolicy().port_range(4, 1)


def test_health_ports_past_65535_are_refused_also_when_scaling() -> None:
    spec = ServiceSpec("s", "img", replicas=2, port=80, health=HealthPolicy(port_base=65530))
    assert spec.health.port_range(2, 1)[-1] == 65535
    with pytest.raises(InvalidSpec, match="leaves no room: 3 replicas need health ports"):
        spec.with_replicas(3)


def test_stored_specs_from_before_the_lower_bounds_read_at_the_bounds() -> None:
    import json

    data = json.loads(make().to_json())
    data["health"].update(hang_window=0.5, interval=0.2, timeout=1.0)
    data["backoff"].update(initial=0.01, maximum=0.05)
    spec = ServiceSpec.from_json(json.dumps(data))
    assert (spec.health.hang_window, spec.health.interval, spec.health.timeout) == (1, 0.5, 0.5)
    assert (spec.backoff.initial, spec.backoff.maximum) == (0.1, 0.1)
    data["health"].update(hang_window=0, interval=0.5, timeout=1.0)  # the old CLI default
    spec = ServiceSpec.from_json(json.dumps(data))
    assert (spec.health.hang_window, spec.health.timeout) == (0, 0.5)


@pytest.mark.parametrize("text", ["[]", '"x"', '{"name": "s"}', '{"name": "s", "image": "i", '])
def test_unreadable_json_is_invalid_spec(text: str) -> None:
    with pytest.raises(InvalidSpec):
        ServiceSpec.from_json(text)
