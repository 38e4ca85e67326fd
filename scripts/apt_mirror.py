"""Print the Debian mirror this machine's apt sources already use for a suite (``bookworm``
``main`` by default), so debootstrap fetches from the same place; print nothing if none.

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/ (``*.list`` one-line entries and
``*.sources`` deb822 stanzas) in apt's order and prints the first ``deb`` URI that carries
the suite and component. Standard library only: it runs with the host's python3.

    python3 scripts/apt_mirror.py [--suite bookworm] [--component main] [--root /etc/apt]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

SCHEMES = ("http://", "https://", "file:/")


def source_files(root: Path) -> list[Path]:
    """The files apt reads, in its order: sources.list, then sources.list.d/ sorted."""
    found = [root / "sources.list"] if (root / "sources.list").is_file() else []
    parts = root / "sources.list.d"
    if parts.is_dir():
        found += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return found


Entry = tuple[list[str], list[str], list[str], list[str]]  # types, URIs, suites, components


def one_line_entries(text: str) -> Iterator[Entry]:
    """Each ``deb [options] URI suite component...`` line."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith("["):  # [arch=amd64 signed-by=...]
            rest = rest.partition("]")[2].strip()
        words = rest.split()
        if len(words) >= 2:
            yield [kind], [words[0]], [words[1]], words[2:]


def deb822_entries(text: str) -> Iterator[Entry]:
    """Each enabled deb822 stanza."""
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        yield (
            stanza.get("types", "").split(),
            stanza.get("uris", "").split(),
            stanza.get("suites", "").split(),
            stanza.get("components", "").split(),
        )


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif raw[0].isspace() and key:  # a continuation line
            fields[key] += " " + raw.strip()
        else:
            name, _, value = raw.partition(":")
            key = name.strip().lower()
            fields[key] = value.strip()


def first_mirror(files: Iterable[tuple[str, str]], suite: str, component: str) -> str | None:
    """The first deb URI for ``suite`` and ``component`` in (file name, text) pairs."""
    for name, text in files:
        entries = deb822_entries(text) if name.endswith(".sources") else one_line_entries(text)
        for types, uris, suites, components in entries:
            if "deb" not in types or suite not in suites or component not in components:
                continue
            for uri in uris:
                if uri.startswith(SCHEMES):
                    return uri
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--component", default="main")
    parser.add_argument("--root", type=Path, default=Path("/etc/apt"))
    args = parser.parse_args(argv)
    texts = []
    for path in source_files(args.root):
        try:
            texts.append((path.name, path.read_text(errors="replace")))
        except OSError:
            continue  # unreadable: as if absent
    mirror = first_mirror(texts, args.suite, args.component)
    if mirror:
        print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())
