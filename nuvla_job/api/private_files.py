"""Files the job API writes that only its own user may read: the database (argon2 hashes,
session digests, job payloads), its WAL and shared-memory index, the admin credentials.

Modes are set explicitly rather than left to the umask: SQLite creates its files 0644 (less
only what the umask removes), which a umask of 022 leaves readable by every user.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(folder: Path) -> None:
    """Create `folder` (and its parents) when missing; a new one is owner-only. OSError when
    it cannot be created."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask: set it explicitly.
    os.chmod(folder, FOLDER_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty and owner-only if missing, or take the group's and others' rights
    away from an existing one (logged). OSError when neither can be done."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)
    try:
        tighten_fd(fd, path)
    finally:
        os.close(fd)


def tighten_fd(fd: int, path: Path | str) -> None:
    """Make the open file `fd` owner-only (a file that existed keeps its mode through
    O_CREAT); one that was not is logged."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if not mode & 0o077:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    except PermissionError:
        # Not ours (a mounted secret, say): whoever provides it decides who may read it.
        log.warning("%s is open to other users (mode %o) and not ours to change", path, mode)
        return
    log.warning(
        "%s was open to other users (mode %o): made it readable by its owner only", path, mode
    )


def tighten(path: Path) -> None:
    """`private_file` for a file that may not exist (nothing is created)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        tighten_fd(fd, path)
    finally:
        os.close(fd)
