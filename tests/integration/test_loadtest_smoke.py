"""The load benchmark end to end in smoke mode, so it never rots. Checks the output's
shape and that nothing is left behind, never its speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from reuseport.kernel import sockets as kernel

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)
def test_smoke_benchmark_writes_every_figure_and_cleans_up(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True)}
    migrate_before = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "loadtest", "--smoke", "--out", str(out), "--base-port", "18600"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1140,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())

    setups = data["throughput"]["setups"]
    assert set(setups) == {
        "reuseport",
        "steered",
        "manual",
        "nginx",
        "haproxy",
        "limit",
        "single",
    }
    assert "--balance hash" in setups["reuseport"]["description"]
    assert "--balance round-robin" in setups["steered"]["description"]
    for name, figures in setups.items():
        assert figures["rps"] > 0 and figures["p99_ms"] > 0, name
        assert figures["runs"], name
    for count in ("64", "1024"):
        for name in ("reuseport", "steered"):
            shares = data["throughput"]["shares"][count][name]
            assert sum(shares["per_replica"].values()) == int(count), (count, name)
        # Every replica of the steered setup is in the map and gets new connections (how
        # evenly is the expectation's business, not the smoke's).
        steered = data["throughput"]["shares"][count]["steered"]
        assert set(steered["per_replica"]) == {"1", "2", "3", "4"}, steered
    assert set(data["ratios"]["nginx"]) == {"rps", "p99"}
    mix = data["throughput"]["slow_mix"]["setups"]
    assert list(mix) == ["reuseport", "steered", "least-conn"]
    for name, figures in mix.items():
        assert figures["rps"] > 0 and figures["p99_ms"] > 0 and figures["runs"], name
    assert "--balance least-conn" in mix["least-conn"]["description"]

    # Latency at equal offered load: one short step at 25 % of nginx's maximum.
    steps = data["latency"]["steps"]
    assert [step["fraction"] for step in steps] == [0.25]
    assert data["latency"]["proxy_max_rps"] == setups["nginx"]["rps"]  # reused, not re-run
    assert steps[0]["offered_rps"] > 0
    for name in ("reuseport", "nginx", "haproxy"):
        figures = steps[0]["setups"][name]
        assert figures["p50_ms"] > 0 and figures["p99_ms"] > 0, name
        assert figures["achieved_rps"] > 0 and figures["responses"] > 0, name
    assert "reuseport" in data["latency_ratios"]["25%"]
    assert any(c["name"].startswith("latency") for c in data["checks"])

    chaos = data["chaos"]
    assert chaos["kills"] and all(k["replacement_ms"] > 0 for k in chaos["kills"])
    assert chaos["requests"] > 0 and chaos["throughput"]
    assert chaos["replacement_ms"]["median"] > 0 and chaos["docker_policy_ms"]["median"] > 0
    assert data["scaleout"]["seconds"] > 0 and data["scaleout"]["docker_run_seconds"] > 0
    cost = data["cost"]
    assert [f["replicas"] for f in cost["idle"]] == [4, 16]
    for figures in cost["idle"]:
        assert figures["cpu_percent"] >= 0 and figures["rss_mb"] > 0, figures
        assert figures["status_writes"] > 0, figures  # the heartbeat, at least
    assert cost["startup"] == data["scaleout"]  # measured once, by the scale-out part
    runs = data["rollout"]["runs"]
    assert [(r["clients"], r["tcp_migrate_req"]) for r in runs] == [
        ("NewConnectionUser", 1),
        ("NewConnectionUser", 0),
        ("KeepAliveUser", 1),
        ("KeepAliveUser", 0),
    ]
    assert all(r["rollout_ok"] for r in runs)
    assert all(r["requests"] > 0 for r in runs)
    overloaded = data["rollout"]["overload"]
    assert [(r["balance"], r["tcp_migrate_req"]) for r in overloaded] == [
        ("hash", 0),
        ("round-robin", 0),
    ]
    assert all(r["rollout_ok"] and r["requests"] > 0 for r in overloaded)
    assert any(c["name"].startswith("steered rollout under overload") for c in data["checks"])

    hang = data["hang"]
    assert set(hang["setups"]) == {"reuseport", "steered", "docker"}
    assert hang["tcp_migrate_req"] == 1 and hang["tcp_migrate_req_restored"] is True
    assert hang["network_timeout_s"] == 5 and hang["left_behind"] == []
    for name, figures in hang["setups"].items():
        assert figures["ok"] > 0 and figures["throughput"], name
        assert isinstance(figures["failures_by_error"], dict), name
        for key in (
            "successor_listening_s",
            "stopped_listener_gone_s",
            "stopped_process_gone_s",
            "unhealthy_s",
        ):
            assert figures[key] is None or figures[key] > 0, (name, key)
    # reuseport must have replaced the hung replica within the smoke run's 8 s of load (its
    # hang window is 5 s): a successor listened and the hung replica's listener was closed.
    ours = hang["setups"]["reuseport"]
    for key in ("successor_listening_s", "stopped_listener_gone_s"):
        assert ours[key] is not None and ours[key] > 0, ("reuseport did not replace it", key)
    assert isinstance(hang["setups"]["reuseport"]["replacements"], dict)
    assert isinstance(hang["setups"]["steered"]["replacements"], dict)
    assert isinstance(hang["setups"]["docker"]["restart_count"], int)
    assert any(c["name"].startswith("hang: ") for c in data["checks"])
    checked = {c["name"] for c in data["checks"]}
    assert {
        "steered req/s vs hash",
        "steered p99 vs hash",
        "steered share of new connections at 64 connections (max/min)",
        "steered share of new connections at 1024 connections (max/min)",
        "hang: steered failed or slow requests <= 1/4 of hash's",
        "hang: steered, no request sent after the suspicion window is hurt",
    } <= checked
    assert set(hang["open_loop"]) == {"reuseport", "steered"}
    for name, figures in hang["open_loop"].items():
        assert figures["requests"] > 0 and figures["per_second"], name

    faults = data["faults"]
    assert faults["tcp_migrate_req_restored"] is True and faults["left_behind"] == []
    names = [s["name"] for s in faults["scenarios"]]
    assert len(names) == 11 and "soak" in names, names
    for scenario in faults["scenarios"]:
        name = scenario["name"]
        assert scenario["requests"] > 0 and scenario["faults"], name
        # The key assertions: nothing fails but requests on a deliberately faulted replica,
        # never more than N + surge containers, every fault followed by all N ready.
        assert scenario["failures_other"] == 0, (name, scenario["failures_by_error"])
        assert scenario["running_max"] <= scenario["running_bound"], name
        assert scenario["converged"] is True, (name, scenario["faults"])
        assert scenario["app_restarts"] in (None, 0), name
    by_name = {s["name"]: s for s in faults["scenarios"]}
    assert all(by_name[n]["problem"] for n in names if n.startswith("spec file"))
    assert by_name["soak"]["soak"]["start"]["rss_mb"] > 0
    assert by_name["crash loop"]["creations_max_per_s"] <= 3  # backoff, not a hot loop

    assert {"results.md", "setups.png", "chaos.png", "hang.png", "faults.png"} <= {
        p.name for p in out.iterdir()
    }
    md = (out / "results.md").read_text()
    assert "Latency at equal offered load (open loop)" in md
    assert "| reuseport:" in md and "| Docker: --restart always + HEALTHCHECK" in md
    assert "| steered:" in md and "| connections | reuseport (hash) | steered (round-robin) |" in md
    assert "| least-conn | " in md  # the slow-request mix

    # Nothing left behind: containers, proxies, listeners on the ports it used.
    assert {c.id for c in docker_client.containers.list(ignore_removed=True, all=True)} <= before
    # One name per pgrep: -x with a pattern longer than 15 characters matches nothing.
    leftovers = b"".join(
        subprocess.run(["pgrep", "-x", name], capture_output=True).stdout
        for name in ("nginx", "haproxy", "locust", "wrk", "h2load")
    )
    assert (Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()) == migrate_before
    assert leftovers == b""
    assert all(not kernel.listening_inodes(port) for port in range(18600, 19000, 1))


@pytest.mark.timeout(900)
def test_the_benchmark_measures_a_service_of_a_project_file(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    """`loadtest --file`: the tool's setups come from the user's file (here 3 replicas with
    an HTTP health check, which each setup gets on its own ports), through `up -f`."""
    before = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True)}
    readme = (REPO / "README.md").read_bytes()
    project = tmp_path / "reuseport.toml"
    project.write_text(
        "[services.shop]\n"
        'image = "reuseport-demo:latest"\n'
        "replicas = 3\n"
        "port = 8080\n"
        "health-port-base = 19500\n"
        'env = { APP_VERSION = "from-${WHO:-file}" }\n'
    )
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "loadtest", "--smoke", "--file", str(project), "--out", str(out)]
        + ["--base-port", "19100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    setups = data["throughput"]["setups"]
    assert "(the tool, up -f, --balance round-robin)" in setups["steered"]["description"]
    assert data["workload"] == f"shop (reuseport-demo:latest) of {project}"
    assert data["throughput"]["replicas"] == 3  # the file's count, not the default 4
    for name in ("reuseport", "steered"):
        shares = data["throughput"]["shares"]["64"][name]["per_replica"]
        assert set(shares) == {"1", "2", "3"}, (name, shares)
    assert "slow_mix" not in data["throughput"]  # the demo's /slow: not the user's app
    assert [step["fraction"] for step in data["latency"]["steps"]] == [0.25]
    assert set(data) & {"chaos", "rollout", "hang", "faults", "cost"} == set()
    assert "3 replicas of shop (reuseport-demo:latest)" in (out / "results.md").read_text()
    assert (REPO / "README.md").read_bytes() == readme
    assert {c.id for c in docker_client.containers.list(ignore_removed=True, all=True)} <= before
    assert all(not kernel.listening_inodes(port) for port in range(19100, 19700))
