import pytest

from reuseport.errors import InvalidSpec
from reuseport.spec import BackoffPolicy, ServiceSpec, default_name, differences, parse_env


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
    [{"image": "reuseport-demo:v2"}, {"port": 9000}, {"env": (("A", "1"),)}, {"user": "1000"}],
)
def test_hash_covers_the_container_template(change: dict[str, object]) -> None:
    assert make().spec_hash() != make(**change).spec_hash()


def test_json_round_trip() -> None:
    spec = make(env=(("A", "1"),), user="1000", replicas=3, backoff=BackoffPolicy(0.1, 1, 2))
    assert ServiceSpec.from_json(spec.to_json()) == spec


def test_differences_name_each_changed_field() -> None:
    diff = differences(make(), make(image="reuseport-demo:v2", env=(("A", "1"),)))
    assert diff == ["image: reuseport-demo:latest -> reuseport-demo:v2", "env: (none) -> A=1"]


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
    from reuseport.spec import HealthPolicy

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
