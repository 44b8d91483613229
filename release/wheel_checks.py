"""What `make dist` checks in every wheel before it writes the checksums.

auditwheel judges the extension module against the manylinux policy of the wheel's tag. It
does not look at the companion: pip installs that from the wheel's `.data/scripts/`, where
auditwheel's policy checks do not reach, yet it must run on every system the tag allows just
the same. So the executable is read here with pyelftools (which auditwheel itself uses): its
architecture, its program interpreter, the libraries it needs, and the newest glibc symbol
version it asks for.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection
from elftools.elf.segments import InterpSegment

# The libraries every manylinux policy lets a program take from the system (PEP 600's base).
SYSTEM_LIBRARIES = frozenset(
    {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
     "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
)  # fmt: skip
MACHINES = {
    "x86_64": ("EM_X86_64", "/lib64/ld-linux-x86-64.so.2"),
    "aarch64": ("EM_AARCH64", "/lib/ld-linux-aarch64.so.1"),
}
WHEEL_NAME = re.compile(
    r"(?P<name>[^-]+)-(?P<version>[^-]+)-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platforms>[^-]+)\.whl"
)


class WheelCheckFailed(Exception):
    """A wheel that must not be published; the message says which and why."""


@dataclass(frozen=True)
class ElfFacts:
    machine: str
    interpreter: str | None
    needed: tuple[str, ...]
    glibc: tuple[int, int]

    @property
    def glibc_text(self) -> str:
        return "{}.{}".format(*self.glibc)


def elf_facts(data: bytes | Path) -> ElfFacts:
    """Architecture, program interpreter, needed libraries and newest GLIBC_x.y version needed."""
    import io

    stream = io.BytesIO(data if isinstance(data, bytes) else data.read_bytes())
    elf = ELFFile(stream)
    interpreter = None
    for segment in elf.iter_segments():
        if isinstance(segment, InterpSegment):
            interpreter = segment.get_interp_name()
    needed: list[str] = []
    newest = (0, 0)
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            # pyelftools sets `needed` on DT_NEEDED tags only (hence getattr).
            needed += [str(getattr(tag, "needed")) for tag in section.iter_tags("DT_NEEDED")]  # noqa: B009
        if isinstance(section, GNUVerNeedSection):
            for _, auxiliaries in section.iter_versions():
                for auxiliary in auxiliaries:
                    found = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", auxiliary.name)
                    if found:
                        newest = max(newest, (int(found.group(1)), int(found.group(2))))
    return ElfFacts(elf["e_machine"], interpreter, tuple(needed), newest)


def platform_of(wheel: Path) -> tuple[str, tuple[int, int]]:
    """(architecture, glibc) the wheel's manylinux tag allows, e.g. ("x86_64", (2, 17))."""
    parsed = WHEEL_NAME.fullmatch(wheel.name)
    if not parsed:
        raise WheelCheckFailed(f"{wheel.name}: not a wheel file name")
    found = re.search(r"manylinux_(\d+)_(\d+)_(x86_64|aarch64)", parsed.group("platforms"))
    if not found:
        raise WheelCheckFailed(f"{wheel.name}: no manylinux_X_Y tag for x86_64 or aarch64")
    return found.group(3), (int(found.group(1)), int(found.group(2)))


def audited_tag(wheel: Path) -> str:
    """The platform tag `auditwheel show` finds the wheel consistent with."""
    result = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True, check=False
    )
    found = re.search(r'consistent with the following platform tag:\s*"([^"]+)"', " ".join(result.stdout.split()))
    if result.returncode != 0 or not found:
        raise WheelCheckFailed(f"{wheel.name}: auditwheel show refused it: {(result.stdout + result.stderr).strip()}")
    return found.group(1)


def check_elf(what: str, facts: ElfFacts, architecture: str, glibc: tuple[int, int], *, program: bool) -> None:
    machine, interpreter = MACHINES[architecture]
    if facts.machine != machine:
        raise WheelCheckFailed(f"{what}: built for {facts.machine}, the tag says {architecture}")
    if facts.glibc > glibc:
        raise WheelCheckFailed(f"{what}: needs GLIBC_{facts.glibc_text}, the tag allows {glibc[0]}.{glibc[1]}")
    foreign = sorted(set(facts.needed) - SYSTEM_LIBRARIES)
    if foreign:
        raise WheelCheckFailed(f"{what}: links {', '.join(foreign)}, which manylinux systems need not have")
    if program and facts.interpreter != interpreter:
        raise WheelCheckFailed(f"{what}: program interpreter {facts.interpreter}, expected {interpreter}")


@dataclass(frozen=True)
class WheelReport:
    wheel: Path
    tag: str
    companion_bytes: int
    companion_glibc: str
    module_glibc: str


def check_wheel(wheel: Path) -> WheelReport:
    """Every check of one wheel; raises WheelCheckFailed naming the first that fails."""
    architecture, glibc = platform_of(wheel)
    tag = audited_tag(wheel)
    if tag not in wheel.name:
        raise WheelCheckFailed(f"{wheel.name}: auditwheel finds it consistent with {tag}, not with the tag it carries")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        scripts = [name for name in names if re.fullmatch(r"[^/]+\.data/scripts/caddy-beacon", name)]
        modules = [name for name in names if re.fullmatch(r"caddy_beacon/_native\.[^/]*so", name)]
        if len(scripts) != 1 or len(modules) != 1:
            raise WheelCheckFailed(
                f"{wheel.name}: expected one companion and one native module, found {scripts + modules}"
            )
        companion_info = archive.getinfo(scripts[0])
        if (companion_info.external_attr >> 16) & 0o111 == 0:
            raise WheelCheckFailed(f"{wheel.name}: the companion is not marked executable")
        companion = elf_facts(archive.read(scripts[0]))
        module = elf_facts(archive.read(modules[0]))
    check_elf(f"{wheel.name}: the companion", companion, architecture, glibc, program=True)
    check_elf(f"{wheel.name}: the native module", module, architecture, glibc, program=False)
    return WheelReport(wheel, tag, companion_info.file_size, companion.glibc_text, module.glibc_text)


def check_sdist(sdist: Path) -> None:
    """The sdist holds every crate the build needs (the companion's too) and no binary."""
    import tarfile

    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
        names = [member.name.split("/", 1)[-1] for member in members]
        for needed in ("pyproject.toml", "Cargo.lock", "build_backend/caddy_beacon_backend.py",
                       "rust/beacon-companion/Cargo.toml", "rust/beacon-core/Cargo.toml", "rust/beacon-py/Cargo.toml"):  # fmt: skip
            if needed not in names:
                raise WheelCheckFailed(f"{sdist.name}: {needed} is missing")
        for member in members:
            if member.isfile():
                head = archive.extractfile(member)
                if head is not None and head.read(4) == b"\x7fELF":
                    raise WheelCheckFailed(f"{sdist.name}: carries a binary, {member.name}")
