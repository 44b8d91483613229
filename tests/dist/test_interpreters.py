"""`make dist` and `make dist-test` find every supported CPython or stop, naming the missing one:
CI must never pass because a version was silently left out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from release.interpreters import ROOT, find, supported_versions


def test_a_missing_interpreter_is_named_in_one_line_and_nothing_runs(tmp_path: Path) -> None:
    # A pyenv root holding every supported CPython but 3.12, no pyenv command, nothing on PATH.
    versions = tmp_path / "pyenv" / "versions"
    versions.mkdir(parents=True)
    for version in supported_versions():
        if version != "3.12":
            build = find(version).path.parent.parent
            (versions / build.name).symlink_to(build)
    (tmp_path / "empty-bin").mkdir()
    env = {
        "PATH": str(tmp_path / "empty-bin"),
        "PYENV_ROOT": str(tmp_path / "pyenv"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "release.interpreters"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no CPython 3.12 found" in result.stderr, result.stderr
    # The same build's wheels cannot be made either: release.dist stops before building anything.
    build = subprocess.run([sys.executable, "-m", "release.dist", "--arch", "x86_64", "--out", str(tmp_path / "out")],
                           env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert build.returncode == 1 and "no CPython 3.12 found" in build.stderr, build
    assert not (tmp_path / "out").exists()
    # With 3.12 back, every version is found under that root.
    twelve = find("3.12").path.parent.parent
    (versions / twelve.name).symlink_to(twelve)
    found = subprocess.run(
        [sys.executable, "-m", "release.interpreters"], env=env, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found
    assert [line.split()[0] for line in found.stdout.splitlines()] == supported_versions()
    assert all(line.split()[1].startswith(str(versions)) for line in found.stdout.splitlines()), found.stdout
