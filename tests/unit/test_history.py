"""`reuseport history` masks env values unless --show-env; state it cannot read is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reuseport import cli
from reuseport.rollout import history
from reuseport.spec import ServiceSpec, redact_value
from reuseport.store import StateStore

SPEC = ServiceSpec(name="web", image="app:1", env=(("DB_PASSWORD", "hunter2"), ("MODE", "a")))


def test_history_masks_env_values_unless_revealed(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    (masked,) = history(store, "web")
    assert masked["env"] == [["DB_PASSWORD", redact_value("hunter2")], ["MODE", redact_value("a")]]
    assert ServiceSpec.from_json(masked["spec"]) == SPEC  # kept whole for `rollout --undo`
    (revealed,) = history(store, "web", reveal=True)
    assert revealed["env"] == [["DB_PASSWORD", "hunter2"], ["MODE", "a"]]


def test_masking_returns_copies_and_leaves_the_stored_history_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    stored = [{"revision": 1, "env": [["K", "v"]], "result": "deployed"}]
    store.save_history("web", stored)
    assert history(store, "web")[0]["env"] == [["K", redact_value("v")]]
    assert store.load_history("web") == stored


def test_history_command_masks_and_shows_env_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    StateStore(tmp_path).save_spec(SPEC)
    cli.main(["history", "web", "--json", "--state-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "hunter2" not in printed
    assert json.loads(printed)[0]["env"][0] == ["DB_PASSWORD", redact_value("hunter2")]
    cli.main(["history", "web", "--state-dir", str(tmp_path)])
    assert "hunter2" not in capsys.readouterr().out
    cli.main(["history", "web", "--show-env", "--json", "--state-dir", str(tmp_path)])
    assert json.loads(capsys.readouterr().out)[0]["env"][0] == ["DB_PASSWORD", "hunter2"]


def test_an_unreadable_spec_is_one_line_with_its_own_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "web.spec.json").write_text('{"name": "web", "ima')
    with pytest.raises(SystemExit) as exited:
        cli.main(["history", "web", "--state-dir", str(tmp_path)])
    assert exited.value.code == 9
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "web.spec.json is unreadable: corrupt or truncated" in err[0]
