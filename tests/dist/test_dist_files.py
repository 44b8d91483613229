"""What `make dist` leaves in dist/: exactly the planned files with true checksums, every wheel
accepted by auditwheel for the tag it carries (its companion included), an sdist that builds
on its own, a Python range pip enforces, and an app image that builds one of these wheels."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from release.dist import TARGETS, plan, planned_wheels, sdist_name
from release.interpreters import ROOT, supported_versions
from release.wheel_checks import WheelCheckFailed, check_elf, check_wheel, elf_facts
from tests.dist.conftest import BUILT, DIST, run

# The wheels the dist under test holds (all eight for `make dist`; see conftest's BUILT).
ALL_WHEELS = BUILT.wheels
# The wheels a release publishes (`make dist`).
RELEASE_WHEELS = planned_wheels(supported_versions(), list(TARGETS))


def listed_in_checksums() -> dict[str, str]:
    sums = DIST / "SHA256SUMS"
    if not sums.exists():
        pytest.fail(f"{sums} is missing: `make dist` writes it", pytrace=False)
    return {name: digest for digest, name in (line.split("  ", 1) for line in sums.read_text().splitlines())}


def test_dist_holds_a_wheel_per_python_and_architecture_the_sdist_and_true_checksums() -> None:
    listed = listed_in_checksums()
    assert set(planned_wheels(supported_versions(), [BUILT.native])) <= set(ALL_WHEELS), (
        "every Python on this machine's architecture"
    )
    assert set(BUILT.architectures) == set(TARGETS), "both architectures built"
    assert sorted(listed) == sorted([*ALL_WHEELS, sdist_name()])
    for name, digest in listed.items():
        assert hashlib.sha256((DIST / name).read_bytes()).hexdigest() == digest, name
    # The format `sha256sum -c` reads, so users can check a download with the usual tool.
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=DIST, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("name", ALL_WHEELS)
def test_auditwheel_accepts_each_wheel_and_its_companion_needs_glibc_2_17_at_most(name: str) -> None:
    report = check_wheel(DIST / name)
    architecture = re.search(r"(x86_64|aarch64)\.whl$", name).group(1)  # type: ignore[union-attr]
    assert report.tag == f"manylinux_2_17_{architecture}"
    assert tuple(map(int, report.companion_glibc.split("."))) <= (2, 17)
    print(f"\nFIGURE {name}: {(DIST / name).stat().st_size:,} bytes; companion {report.companion_bytes:,} bytes, "
          f"GLIBC ≤ {report.companion_glibc}; native module GLIBC ≤ {report.module_glibc}")  # fmt: skip


def test_the_glibc_check_refuses_a_companion_linked_against_this_machine_s_glibc() -> None:
    """The companion `pip install .` builds with this machine's linker asks for this machine's
    glibc; the check that guards the wheels must say so."""
    host_build = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "caddy-beacon"
    assert host_build.exists(), "`pip install .` (make install-test) builds it"
    facts = elf_facts(host_build)
    assert facts.glibc > (2, 17), f"this machine's glibc build asks only for {facts.glibc_text}"
    with pytest.raises(WheelCheckFailed, match=rf"needs GLIBC_{re.escape(facts.glibc_text)}, the tag allows 2\.17"):
        check_elf("host build", facts, "x86_64", (2, 17), program=True)
    with pytest.raises(WheelCheckFailed, match="built for EM_X86_64, the tag says aarch64"):
        check_elf("host build", facts, "aarch64", (2, 40), program=True)


def test_the_app_image_builds_a_wheel_make_dist_builds_and_runs_it_on_the_same_python() -> None:
    dockerfile = (ROOT / "deploy" / "app.Dockerfile").read_text()
    default = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, re.M)
    assert default and default.group(1) == "3.12", "the image defaults to the most common Python"
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.M)
    pythons = [image for image, _ in stages if image.startswith("python:")]
    # The build stage and the run stage: one Python, the build argument's.
    assert pythons == ["python:${PYTHON_VERSION}-slim-bookworm"] * 2, stages
    (build,) = re.findall(r"^RUN /venv/bin/python -m release\.dist (.*)$", dockerfile, re.M)
    arguments = [argument.replace("${PYTHON_VERSION}", "PYVERSION") for argument in shlex.split(build)]
    assert "--plan" not in arguments and "--no-sdist" in arguments
    for version in supported_versions():
        for architecture in TARGETS:
            # What the build stage makes, for each Python the argument may name, on either architecture.
            planned = plan([a.replace("PYVERSION", version) for a in arguments], native=architecture).files
            assert planned == planned_wheels([version], [architecture])
            assert set(planned) <= set(RELEASE_WHEELS), planned
    assert re.search(r"^RUN pip install [^\n]*/wheels/\*\.whl", dockerfile, re.M), (
        "the run stage installs the built wheel"
    )
    # compose builds the image for a Python a wheel exists for.
    compose = yaml.safe_load((ROOT / "compose.yml").read_text())["services"]["app"]["build"]
    assert (
        compose["dockerfile"] == "deploy/app.Dockerfile" and compose["args"]["PYTHON_VERSION"] in supported_versions()
    )
    assert "cargo" not in dockerfile.split("AS build", 1)[1].split("\nFROM ", 1)[1], "no Rust in the run stage"


@pytest.mark.parametrize("python_version", ["3.9", "3.14"])
def test_pip_on_an_unsupported_python_refuses_the_release_with_requires_python(
    python_version: str, tmp_path: Path
) -> None:
    """pip's own refusal, from the metadata, before anything is compiled: the wheels do not
    match that Python's tag, so pip turns to the sdist, reads its metadata and stops there."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-index",
         "--find-links", str(DIST), "--python-version", python_version, "--dest", str(tmp_path), "caddy-beacon"],
        capture_output=True, text=True, timeout=300,
        # The backend runs the `maturin` executable of this environment (--no-build-isolation).
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    refusal = re.search(rf"requires a different Python: {re.escape(python_version)}\S* not in '([^']+)'", output)
    assert refusal, output
    assert sorted(refusal.group(1).split(",")) == ["<3.14", ">=3.10"], output
    assert "Compiling" not in output and "cargo" not in output.lower(), output


def test_the_sdist_builds_and_installs_from_a_clean_directory(tmp_path: Path) -> None:
    """`pip install caddy-beacon-*.tar.gz` with Rust present, in a directory holding nothing
    else: pip's isolated build (maturin from PyPI) through the repository's backend, the
    companion included."""
    clean = tmp_path / "clean"
    clean.mkdir()
    sdist = shutil.copy2(DIST / sdist_name(), clean)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", sdist],
        env={**os.environ, "PIP_NO_CACHE_DIR": "1"},
        timeout=1500,
    )
    imported = run(
        [
            venv / "bin" / "python",
            "-c",
            "import caddy_beacon._native as n, caddy_beacon as c; print(c.__file__, n.__file__)",
        ]
    )
    assert all(Path(path).is_relative_to(venv) for path in imported.split()), imported
    companion = venv / "bin" / "caddy-beacon"
    assert companion.read_bytes()[:4] == b"\x7fELF"
    assert re.match(r"caddy-beacon \d+\.\d+\.\d+", run([companion, "--version"])), "the companion runs"
    assert sorted(p.name for p in clean.iterdir()) == [sdist_name()], "the build wrote into the sdist's directory"
