"""A real full disk under the job API's database: a small tmpfs, filled up by a filler file.

Mounting needs root (CAP_SYS_ADMIN); elsewhere the scenario is skipped with the reason (a
failure under CI) and its row of the table is marked "not run".
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path


class DiskFullUnavailable(Exception):
    """This machine does not let us mount a tmpfs."""


class SmallDisk:
    """A tmpfs of `size` mounted on `path`; `fill()` leaves no free byte, `free()` undoes it."""

    def __init__(self, path: Path, size: str = "32m") -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"
        self.mounted = False

    def mount(self) -> SmallDisk:
        if os.geteuid() != 0:
            raise DiskFullUnavailable("mounting a small tmpfs needs root")
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise DiskFullUnavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self.mounted = True
        return self

    def fill(self) -> int:
        """Write the filler until the file system is full; returns the bytes written."""
        written = 0
        with open(self.filler, "ab", buffering=0) as handle:
            for chunk in (1 << 20, 4096, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        handle.write(block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    written += chunk
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False
