"""Which CPython versions caddy-beacon supports, and where this machine keeps each of them.

The native module uses CPython's full C API, so every supported minor version gets a wheel of
its own. The list of versions lives in one place, pyproject.toml's classifiers; `make dist`
builds one wheel per listed version and `make dist-test` installs each into its own interpreter.
An interpreter is found under pyenv's root (`pyenv root`, else $PYENV_ROOT, else ~/.pyenv), or
as `pythonX.Y` on PATH; a missing one is an error naming it, never a silent skip.

Runs on any supported Python (the app image's build stage may have 3.10), so no tomllib.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


class MissingInterpreter(Exception):
    """No usable CPython of a supported version on this machine."""


@dataclass(frozen=True)
class Interpreter:
    version: str
    path: Path

    @property
    def wheel_tag(self) -> str:
        """The interpreter part of the wheel name, e.g. cp312-cp312."""
        digits = self.version.replace(".", "")
        return f"cp{digits}-cp{digits}"


def supported_versions(pyproject: Path = PYPROJECT) -> list[str]:
    """The minor versions pyproject.toml lists as `Programming Language :: Python :: 3.N`."""
    versions = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject.read_text())
    if not versions:
        raise SystemExit(f"{pyproject}: no 'Programming Language :: Python :: 3.N' classifiers")
    return sorted(set(versions), key=lambda v: tuple(int(part) for part in v.split(".")))


def pyenv_versions_directory() -> Path | None:
    pyenv = shutil.which("pyenv")
    if pyenv:
        result = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip()) / "versions"
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    return Path(root) / "versions"


def candidates(version: str) -> list[Path]:
    """pyenv's builds of `version` (newest patch release first), then `pythonX.Y` on PATH.
    Only plain CPython builds: no free-threaded (3.13t) or development (3.13-dev) ones."""
    found: list[Path] = []
    versions = pyenv_versions_directory()
    if versions and versions.is_dir():
        pattern = re.compile(rf"{re.escape(version)}\.(\d+)")
        builds = [(int(m.group(1)), entry) for entry in versions.iterdir() if (m := pattern.fullmatch(entry.name))]
        found += [entry / "bin" / f"python{version}" for _, entry in sorted(builds, reverse=True)]
    on_path = shutil.which(f"python{version}")
    if on_path:
        found.append(Path(on_path))
    return found


def is_cpython(path: Path, version: str) -> bool:
    """Runs it: the file must be a working CPython `version` with the GIL (a standard build)."""
    probe = (
        "import sys, sysconfig; "
        "print(sys.implementation.name, '%d.%d' % sys.version_info[:2], sysconfig.get_config_var('Py_GIL_DISABLED') or 0)"
    )
    try:
        result = subprocess.run([str(path), "-c", probe], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.split() == ["cpython", version, "0"]


def find(version: str) -> Interpreter:
    for path in candidates(version):
        if path.exists() and is_cpython(path, version):
            return Interpreter(version, path)
    where = pyenv_versions_directory()
    raise MissingInterpreter(
        f"no CPython {version} found (looked in {where} and for python{version} on PATH): "
        f"install it, e.g. `pyenv install {version}`"
    )


def find_all(versions: list[str]) -> list[Interpreter]:
    """Every version's interpreter; raises for the first one that is missing."""
    return [find(version) for version in versions]


def main(argv: list[str]) -> int:
    """`python -m release.interpreters [3.N ...]`: prints `version path` per line, or one line
    naming the missing interpreter and exits 1."""
    try:
        for interpreter in find_all(argv or supported_versions()):
            print(interpreter.version, interpreter.path)
    except MissingInterpreter as missing:
        print(f"caddy-beacon: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
