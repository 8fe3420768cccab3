"""One way to write a file so that a reader never sees half of it.

Every file modeconn writes outside the results store (members and their sidecars, figures,
the HTML report, exported tables) goes through :func:`open_atomic`: the bytes go to a
temporary sibling, are flushed to disk, and the temporary file is renamed onto the target
with :func:`os.replace`; the folder is then synced so the rename survives a power loss.
On any error, a kill included, the target is left as it was and the temporary file is
removed (or, after SIGKILL, left as a dot-file that the next write ignores).

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     p = pathlib.Path(d) / "a.txt"
...     write_text_atomic(p, "hello")
...     p.read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "is_temporary",
    "open_atomic",
    "replace_atomic",
    "temporary_sibling",
    "write_bytes_atomic",
    "write_text_atomic",
]


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for its temporary file: ``.<name>.tmp-<pid>-<hex>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file left by an interrupted write."""
    return path.name.startswith(".") and ".tmp-" in path.name


def _sync_folder(folder: Path) -> None:
    try:  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; move it onto ``path`` on success.

    The file is created with mode 0o666 less the umask, like ``open(path, "wb")`` would
    (``tempfile.mkstemp`` would make it private, 0o600).
    """
    target = Path(path)
    tmp = temporary_sibling(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_folder(target.parent)


def replace_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to write a temporary sibling by name, then move it onto ``path``.

    For writers that take a file name rather than a handle (``safetensors.torch.save_file``,
    ``DataFrame.to_parquet``). On any error the temporary file is removed.
    """
    target = Path(path)
    tmp = temporary_sibling(target)
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with open_atomic(path) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
