"""Reading and writing the user's own private files safely.

The agent runs as the user, but the files it trusts (the scoped token, the
Claude credentials) could have been replaced by a symlink or left by someone
else. Files are opened without following symlinks and checked on the open
descriptor, so that what is checked is what is read. Writes go to a temporary
file in the same directory, are flushed to disk and renamed into place, so a
crash at any moment leaves either the old or the new content, never a mix.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

log = logging.getLogger(__name__)

#: Far larger than any real token or credentials file; a bigger one is junk,
#: and reading it whole would only waste the memory of every run.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """What tells two versions of a file apart without keeping its content."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class PrivateFile:
    """The content of a checked file and the identity it had when read."""

    content: bytes
    identity: FileIdentity
    mode: int


def owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def read_private(
    path: Path, uid: int, what: str, error: type[AgentError]
) -> PrivateFile | None:
    """Read ``path`` if it is a regular file owned by ``uid``; None if missing.

    Raises ``error`` (a subclass of ``AgentError``) for a symlink, something
    other than a file, a file owned by someone else, or one too large or
    unreadable; the message names the path and the fix.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _open_error(path, uid, what, error, err) from None

    try:
        st = os.fstat(fd)
        _check_owned_file(path, st, uid, what, error)
        content = _read_all(fd, path, what, error)
    finally:
        os.close(fd)
    return PrivateFile(content, FileIdentity.of(st), stat.S_IMODE(st.st_mode))


def _open_error(
    path: Path, uid: int, what: str, error: type[AgentError], err: OSError
) -> AgentError:
    if err.errno == errno.ELOOP:
        return error(
            f"The {what} {path} is a symlink; refusing to follow it, because it "
            "could point at another user's file.",
            f"Replace it with the real file: rm {path}, then recreate it as "
            f"{owner_name(uid)}.",
        )
    return error(
        f"The {what} {path} cannot be opened ({err.strerror}).",
        f"Check that {path} is a file owned by {owner_name(uid)} with mode 600.",
    )


def _check_owned_file(
    path: Path, st: os.stat_result, uid: int, what: str, error: type[AgentError]
) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise error(
            f"The {what} {path} is not a regular file; refusing to use it.",
            f"Move it aside (mv {path} {path}.bad) and recreate the file.",
        )
    if st.st_uid != uid:
        raise error(
            f"The {what} {path} is owned by {owner_name(st.st_uid)}, not by "
            f"{owner_name(uid)}; refusing to use it.",
            f"Check who put it there, then: chown {owner_name(uid)}: {path}",
        )


def _read_all(fd: int, path: Path, what: str, error: type[AgentError]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 65536):
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise error(
                f"The {what} {path} is larger than {MAX_FILE_BYTES} bytes, which "
                "no real one is; refusing to read it.",
                f"Move it aside (mv {path} {path}.bad) and recreate the file.",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def identity_of(path: Path) -> FileIdentity | None:
    """The identity ``path`` has now, without following a symlink."""
    try:
        return FileIdentity.of(os.lstat(path))
    except FileNotFoundError:
        return None


def atomic_write(
    path: Path,
    content: bytes,
    mode: int = 0o600,
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``content``: temporary file, fsync, rename.

    ``before_rename`` runs after the new content is safely on disk and just
    before it takes the old file's place; it may raise to abandon the write,
    and the temporary file is then removed. Raises ``OSError`` on I/O trouble.
    """
    hidden = "." + path.name.lstrip(".")
    tmp = path.with_name(f"{hidden}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or widened it
        _write_all(fd, content)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)

    try:
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; some file systems cannot, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        log.debug("fsync of %s failed: %s", directory, err)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) as a directory only the user can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
