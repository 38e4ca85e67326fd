"""scripts/apt_mirror.py: the mirror debootstrap uses is the one apt already names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apt_mirror.py"
# Placeholder hosts (.invalid never resolves): no real mirror is named in this repository.
MAIN = "http://main-mirror.invalid/debian"
OTHER = "http://other-mirror.invalid/debian"


@pytest.fixture(scope="module")
def apt_mirror() -> ModuleType:
    spec = importlib.util.spec_from_file_location("apt_mirror", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEB822 = f"""\
Types: deb-src
URIs: {OTHER}
Suites: bookworm
Components: main

Types: deb
# a comment line inside a stanza
URIs: {OTHER}-security
Suites: bookworm-security
Components: main

Types: deb
URIs: {OTHER}
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
URIs:
 {MAIN}
Suites: bookworm bookworm-updates
Components: main contrib
"""


def test_deb822_picks_the_first_enabled_deb_stanza_for_bookworm_main(
    apt_mirror: ModuleType,
) -> None:
    assert apt_mirror.first_mirror([("debian.sources", DEB822)], "bookworm", "main") == MAIN
    assert apt_mirror.first_mirror([("debian.sources", DEB822)], "trixie", "main") is None


def test_one_line_format_with_options_and_comments(apt_mirror: ModuleType) -> None:
    text = (
        "# deb http://commented.invalid/debian bookworm main\n"
        f"deb-src {OTHER} bookworm main\n"
        f"deb {OTHER} bookworm contrib\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {MAIN} bookworm main non-free # trailing\n"
    )
    assert apt_mirror.first_mirror([("sources.list", text)], "bookworm", "main") == MAIN


def test_files_are_read_in_apt_order_and_disabled_files_ignored(
    apt_mirror: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "b.list").write_text(f"deb {OTHER} bookworm main\n")
    (parts / "a.sources").write_text(DEB822)
    (parts / "0.list.disabled").write_text(f"deb {OTHER}/x bookworm main\n")
    assert apt_mirror.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{MAIN}\n"
    (tmp_path / "sources.list").write_text(f"deb {OTHER}/first bookworm main\n")
    apt_mirror.main(["--root", str(tmp_path)])
    assert capsys.readouterr().out == f"{OTHER}/first\n"  # sources.list comes first


def test_nothing_printed_without_a_matching_source(
    apt_mirror: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert apt_mirror.main(["--root", str(tmp_path / "missing")]) == 0
    assert capsys.readouterr().out == ""
