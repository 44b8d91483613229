"""`make dist`: every file a release of caddy-beacon publishes, built into dist/ and checked.

- One wheel per supported CPython (pyproject's classifiers) and architecture (x86_64, aarch64),
  tagged manylinux_2_17 (manylinux2014). 2.17 is the floor Rust itself keeps for its gnu
  targets, so the older tag costs nothing and reaches every glibc distribution still in use:
  RHEL/CentOS 7 and Amazon Linux 2 (glibc 2.17 and 2.26) and Ubuntu 18.04 (2.27) among them,
  which a manylinux_2_28 wheel would send to the sdist. It needs pip 19.3 or newer.
- The native module is built by maturin with `--zig` and the companion by cargo-zigbuild: zig
  links against glibc 2.17's symbol versions whatever glibc this machine has, and
  cross-compiles to aarch64 with nothing else installed. Each architecture's companion is built
  once and packed into all of its wheels.
- Per Python version only pyo3 and beacon-py are compiled again: the crates that do not depend
  on the interpreter (beacon-core, tokio, rustls, ...) are reused from the shared target
  directory. The companion builds in a directory of its own inside it (zig-companion/): cargo
  fingerprints every crate with the linker's path, and maturin's zig wrapper and
  cargo-zigbuild's are different files, so in one directory each build would throw away the
  other's work (measured: every `make dist` recompiled both, 4 minutes per architecture).
- The sdist, built before any binary is staged.
- Then every wheel is checked (release/wheel_checks.py) and dist/SHA256SUMS is written, in
  `sha256sum -c` format.

    python -m release.dist                      # everything (what `make dist` runs)
    python -m release.dist --python 3.12 --arch native --no-sdist --out /wheels   # the app image
    python -m release.dist --plan               # the file names a build makes, nothing built
    python -m release.dist --cross-python newest --out target/dist-test   # what `make test` builds

`make test` builds every wheel of this machine's architecture and, for the other one, only the
newest CPython's (`--cross-python newest`): that wheel takes the other architecture through every
step a release does (its companion and module cross-compiled with zig, glibc 2.17, auditwheel);
the other three differ from it only in the interpreter pyo3 is configured for, and `make dist`
builds them (about 150 s of the 6.5 min the second architecture costs from cold).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from release.interpreters import ROOT, MissingInterpreter, find_all, supported_versions

sys.path.insert(0, str(ROOT / "build_backend"))
from caddy_beacon_backend import build_companion, stage, unstage  # noqa: E402

TARGETS = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu"}
GLIBC = "2.17"
COMPATIBILITY = "manylinux2014"
PLATFORM_TAG = "manylinux2014_{arch}.manylinux_2_17_{arch}"
DISTRIBUTION = "caddy_beacon"


def project_version() -> str:
    found = re.search(
        r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M | re.S
    )
    if not found:
        raise SystemExit("Cargo.toml: no [workspace.package] version")
    return found.group(1)


def native_architecture() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def planned_wheels(versions: list[str], architectures: list[str]) -> list[str]:
    """The wheel file names a build of these versions and architectures makes."""
    names = []
    for architecture in architectures:
        for version in versions:
            digits = version.replace(".", "")
            platform_tag = PLATFORM_TAG.format(arch=architecture)
            names.append(f"{DISTRIBUTION}-{project_version()}-cp{digits}-cp{digits}-{platform_tag}.whl")
    return names


def sdist_name() -> str:
    return f"{DISTRIBUTION}-{project_version()}.tar.gz"


def tool(name: str) -> str:
    """A build tool from this Python's environment (release/requirements.txt), else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"caddy-beacon: {name} is missing: pip install -r release/requirements.txt")
    return found


def run(command: list[str], what: str) -> None:
    started = time.monotonic()
    print(f"==> {what}", flush=True)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"caddy-beacon: {what} failed (exit {result.returncode}): {' '.join(command)}")
    print(f"    {what}: {time.monotonic() - started:.0f} s", flush=True)


def ensure_rust_target(triple: str) -> None:
    installed = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True, check=False)
    if installed.returncode != 0:
        raise SystemExit("caddy-beacon: rustup is needed to add Rust targets (https://rustup.rs)")
    if triple not in installed.stdout.split():
        run(["rustup", "target", "add", triple], f"rustup target add {triple}")


def interpreter_arguments(versions: list[str], architecture: str) -> list[str]:
    """maturin's -i: the real interpreters for this machine's architecture; for another one
    only the version (maturin then uses the sysconfig it carries for that platform)."""
    if architecture != native_architecture():
        return [f"python{version}" for version in versions]
    return [str(interpreter.path) for interpreter in find_all(versions)]


def build_architecture(architecture: str, versions: list[str], out: Path) -> None:
    triple = TARGETS[architecture]
    ensure_rust_target(triple)
    started = time.monotonic()
    print(f"==> companion for {architecture} (glibc {GLIBC})", flush=True)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "zig-companion"
    stage(build_companion([tool("cargo-zigbuild"), "zigbuild"], target=f"{triple}.{GLIBC}", target_dir=target_dir))
    print(f"    companion for {architecture}: {time.monotonic() - started:.0f} s", flush=True)
    command = [
        sys.executable, "-m", "maturin", "build", "--release", "--locked", "--zig",
        "--target", triple, "--compatibility", COMPATIBILITY, "--out", str(out),
        "--interpreter", *interpreter_arguments(versions, architecture),
    ]  # fmt: skip
    run(command, f"wheels for {architecture}, CPython {', '.join(versions)}")


def clear_previous(out: Path) -> None:
    """Removes earlier builds of ours from `out` (nothing else in it)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(f"{DISTRIBUTION}-*.whl"), *out.glob(f"{DISTRIBUTION}-*.tar.gz"), out / "SHA256SUMS"]:
        old.unlink(missing_ok=True)


def write_checksums(out: Path, names: list[str]) -> Path:
    lines = []
    for name in sorted(names):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    sums = out / "SHA256SUMS"
    sums.write_text("".join(lines))
    return sums


def verify(out: Path, wheels: list[str], sdist: bool) -> None:
    from release.wheel_checks import WheelCheckFailed, check_sdist, check_wheel

    built = sorted(path.name for path in out.glob(f"{DISTRIBUTION}-*.whl"))
    if built != sorted(wheels):
        raise SystemExit(f"caddy-beacon: built {built}, expected {sorted(wheels)}")
    print(f"{'file':<80} {'bytes':>10}  audited tag / companion", flush=True)
    try:
        for name in wheels:
            report = check_wheel(out / name)
            print(
                f"{name:<80} {(out / name).stat().st_size:>10,}  {report.tag}; companion {report.companion_bytes:,} "
                f"bytes, GLIBC ≤ {report.companion_glibc}; module GLIBC ≤ {report.module_glibc}"
            )
        if sdist:
            check_sdist(out / sdist_name())
            print(f"{sdist_name():<80} {(out / sdist_name()).stat().st_size:>10,}  (no binaries; every crate)")
    except WheelCheckFailed as failed:
        raise SystemExit(f"caddy-beacon: {failed}") from None


@dataclass(frozen=True)
class Plan:
    versions: list[str]
    architectures: list[str]
    sdist: bool
    out: Path
    print_only: bool
    # The versions built for an architecture other than this machine's (None: `versions`).
    cross_versions: list[str] | None = None
    native: str = "x86_64"

    def versions_for(self, architecture: str) -> list[str]:
        if self.cross_versions is None or architecture == self.native:
            return self.versions
        return self.cross_versions

    @property
    def wheels(self) -> list[str]:
        return [name for a in self.architectures for name in planned_wheels(self.versions_for(a), [a])]

    @property
    def files(self) -> list[str]:
        return self.wheels + ([sdist_name()] if self.sdist else [])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m release.dist", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--python", action="append", metavar="3.N", help="a CPython version (repeatable; default: every supported one)"
    )
    parser.add_argument(
        "--arch", action="append", choices=[*TARGETS, "native"], help="repeatable; default: x86_64 and aarch64"
    )
    parser.add_argument(
        "--cross-python",
        metavar="3.N|newest",
        help="for an architecture other than this machine's, build only this CPython's wheel (what make test does)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--no-sdist", action="store_true", help="wheels only")
    parser.add_argument("--plan", action="store_true", help="print the file names a build makes and stop")
    return parser


def plan(argv: list[str], native: str) -> Plan:
    """What these arguments build on a machine of architecture `native` (bad ones exit 2)."""
    arguments = parser()
    options = arguments.parse_args(argv)
    supported = supported_versions()
    versions = options.python or supported
    unknown = sorted(set(versions) - set(supported))
    if unknown:
        arguments.error(f"CPython {', '.join(unknown)} is not supported (pyproject.toml lists {', '.join(supported)})")
    architectures = [native if a == "native" else a for a in (options.arch or list(TARGETS))]
    if any(a not in TARGETS for a in architectures):
        arguments.error(f"this machine is {native}: only {', '.join(TARGETS)} are built")
    cross = None
    if options.cross_python is not None:
        chosen = (
            max(versions, key=lambda v: tuple(map(int, v.split("."))))
            if options.cross_python == "newest"
            else options.cross_python
        )
        if chosen not in versions:
            arguments.error(
                f"--cross-python {options.cross_python}: not among the versions built ({', '.join(versions)})"
            )
        cross = [chosen]
    return Plan(
        list(dict.fromkeys(versions)),
        list(dict.fromkeys(architectures)),
        not options.no_sdist,
        options.out.resolve(),
        options.plan,
        cross,
        native,
    )


def main(argv: list[str] | None = None) -> int:
    native = native_architecture()
    build = plan(sys.argv[1:] if argv is None else argv, native)
    if build.print_only:
        print("\n".join(build.files))
        return 0
    # The zig builds need cargo-zigbuild and `python3 -m ziglang` of this environment first on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        if native in build.architectures:
            find_all(build.versions)
    except MissingInterpreter as missing:
        raise SystemExit(f"caddy-beacon: {missing}") from None
    started, out = time.monotonic(), build.out
    clear_previous(out)
    unstage()
    if build.sdist:
        run([sys.executable, "-m", "maturin", "sdist", "--out", str(out)], "sdist")
    try:
        for architecture in build.architectures:
            build_architecture(architecture, build.versions_for(architecture), out)
    finally:
        unstage()
    verify(out, build.wheels, build.sdist)
    sums = write_checksums(out, build.files)
    print(f"{len(build.files)} files and {sums} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
