"""Prints the test extras of pyproject.toml as a requirements file, the package's own extras
(its `caddy-beacon[demo]`) expanded: what `make check` installs beside its editable build."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib


def requirements(extra: str, extras: dict[str, list[str]], name: str) -> list[str]:
    found: list[str] = []
    for requirement in extras[extra]:
        own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", requirement)
        if own:
            for inner in own.group(1).split(","):
                found += requirements(inner.strip(), extras, name)
        else:
            found.append(requirement)
    return found


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    print("\n".join(requirements("test", project["optional-dependencies"], project["name"])))


if __name__ == "__main__":
    sys.exit(main())
