"""The PEP 517 backend of caddy-beacon: maturin, plus the companion as a native program.

maturin builds the extension module (`rust/beacon-py`) and packs the wheel. The `caddy-beacon`
command is not a Python entry point: every replica runs one companion, and a Python process
hosting it costs about 22 MiB resident where the Rust binary needs about 5 (shared code pages
included). So before maturin packs the wheel, this backend builds the `beacon-companion` binary
with cargo and stages it in `wheel-data/scripts/`; `[tool.maturin] data` points there, and pip
installs what is under `scripts/` as executables on PATH — the way ruff and uv ship theirs.
`pip install .` stays the one install step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import maturin
from maturin import get_requires_for_build_sdist, get_requires_for_build_wheel  # noqa: F401 (re-exported hooks)

ROOT = Path(__file__).resolve().parent.parent
STAGED = ROOT / "wheel-data" / "scripts"


def stage_companion() -> Path:
    """Builds the companion in release mode for this machine and stages it for the wheel."""
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit("caddy-beacon: building it needs Rust's cargo on PATH (https://rustup.rs)")
    return stage(build_companion([cargo, "build"]))


def build_companion(build: list[str], *, target: str | None = None, target_dir: Path | None = None) -> Path:
    """Runs `build` (`cargo build`, or `cargo-zigbuild zigbuild` for `make dist`) for the
    companion's release binary and returns where the executable is."""
    command = [*build, "--release", "--locked", "-p", "beacon-companion", "--message-format=json-render-diagnostics"]
    command += ["--target", target] if target else []
    command += ["--target-dir", str(target_dir)] if target_dir else []
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"caddy-beacon: `{' '.join(command)}` failed (exit {result.returncode}); see the errors above")
    executable = None
    for line in result.stdout.splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            if message["target"]["name"] == "caddy-beacon":
                executable = Path(message["executable"])
    if executable is None or not executable.exists():
        raise SystemExit("caddy-beacon: cargo built no caddy-beacon executable")
    return executable


def stage(executable: Path) -> Path:
    """Copies the companion to wheel-data/scripts/caddy-beacon, where maturin packs it from."""
    target = staging_directory() / "caddy-beacon"
    shutil.copy2(executable, target)
    os.chmod(target, 0o755)
    return target


def unstage() -> None:
    """Empties the staging directory, so a source distribution never carries a binary."""
    shutil.rmtree(STAGED, ignore_errors=True)
    staging_directory()


def staging_directory() -> Path:
    """maturin wants the data directory to exist in every hook, even before anything is staged."""
    STAGED.mkdir(parents=True, exist_ok=True)
    return STAGED


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings: Mapping[str, Any] | None = None) -> str:
    staging_directory()
    return str(maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings))


def build_sdist(sdist_directory: str, config_settings: Mapping[str, Any] | None = None) -> str:
    staging_directory()
    return str(maturin.build_sdist(sdist_directory, config_settings))


def build_wheel(
    wheel_directory: str, config_settings: Mapping[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    stage_companion()
    return str(maturin.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(
    wheel_directory: str, config_settings: Mapping[str, Any] | None = None, metadata_directory: str | None = None
) -> str:
    stage_companion()
    return str(maturin.build_editable(wheel_directory, config_settings, metadata_directory))
