"""Host binaries the plugin's images are built from."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path


class NoStaticBusybox(RuntimeError):
    """No statically linked busybox on this host."""


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP program header (statically linked)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return False
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = (
            struct.unpack_from(f"{end}Q", data, 0x20)[0],
            *struct.unpack_from(f"{end}HH", data, 0x36),
        )
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(f"{end}I", data, 0x1C)[0],
            *struct.unpack_from(f"{end}HH", data, 0x2A),
        )
    pt_interp = 3
    for i in range(phnum):
        (p_type,) = struct.unpack_from(f"{end}I", data, phoff + i * phentsize)
        if p_type == pt_interp:
            return False
    return True


def find_static_busybox() -> Path:
    """A statically linked busybox binary (Debian's busybox-static)."""
    candidates = [Path("/usr/bin/busybox"), Path("/bin/busybox")]
    on_path = shutil.which("busybox", path=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and _is_static_elf(candidate):
            return candidate
    raise NoStaticBusybox(
        "no statically linked busybox found (apt-get install busybox-static); tried " + ", ".join(map(str, candidates))
    )
