"""`make dist-test`: each x86_64 wheel in dist/ installed into a fresh virtualenv of its own
CPython (found as release/interpreters.py finds them), with no Rust on PATH, then run as users
run it. This folder is outside the default test run (pytest never recurses into a `dist`
folder; pyproject says so too): it needs `make dist` first."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from release.dist import native_architecture, plan, planned_wheels
from release.interpreters import MissingInterpreter, find, supported_versions

# What the dist under test was built with: release.dist's own arguments (make test passes the
# ones it built with; by default `make dist`'s, every wheel in dist/).
BUILT = plan(shlex.split(os.environ.get("BEACON_DIST_ARGS", "")), native_architecture())
DIST = BUILT.out
# What the smoke app needs besides the wheel: the versions the README's quickstart asks for.
APP_REQUIREMENTS = ("fastapi>=0.110", "uvicorn[standard]>=0.29")


@dataclass(frozen=True)
class InstalledWheel:
    """A fresh virtualenv of one CPython with one of our wheels (and FastAPI/uvicorn) in it."""

    version: str
    wheel: Path
    venv: Path
    install_seconds: float

    @property
    def tag(self) -> str:
        return "cp" + self.version.replace(".", "")

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def companion(self) -> Path:
        return self.venv / "bin" / "caddy-beacon"


def path_without_rust() -> str:
    """PATH minus every directory that has cargo or rustc: pip must not find a compiler."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not any(
        (Path(d) / tool).exists() for tool in ("cargo", "rustc", "rustup"))]  # fmt: skip
    return os.pathsep.join(kept)


def run(command: list[str | Path], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def x86_64_wheel(version: str) -> Path:
    (name,) = planned_wheels([version], ["x86_64"])
    wheel = DIST / name
    if not wheel.exists():
        pytest.fail(f"{wheel} is missing: `make dist` (or make test's dist-test) builds it", pytrace=False)
    return wheel


@pytest.fixture(scope="session", params=supported_versions(), ids=lambda version: "cp" + str(version).replace(".", ""))
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledWheel]:
    version: str = request.param
    try:
        interpreter = find(version)
    except MissingInterpreter as missing:
        pytest.fail(str(missing), pytrace=False)
    wheel = x86_64_wheel(version)
    venv = tmp_path_factory.mktemp(f"venv-{version}")
    run([interpreter.path, "-m", "venv", venv])
    # The wheel alone, from the file, with no index to fall back on and no Rust to build with.
    no_rust = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{path_without_rust()}",
               "CARGO_HOME": str(venv / "no-cargo"), "RUSTUP_HOME": str(venv / "no-rustup")}  # fmt: skip
    no_rust.pop("CARGO_TARGET_DIR", None)
    assert shutil.which("cargo", path=no_rust["PATH"]) is None
    started = time.monotonic()
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--only-binary=:all:", wheel],
        env=no_rust,
    )
    install_seconds = time.monotonic() - started
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--only-binary=:all:", *APP_REQUIREMENTS],
        env=no_rust,
    )
    yield InstalledWheel(version, wheel, venv, install_seconds)
    shutil.rmtree(venv, ignore_errors=True)
