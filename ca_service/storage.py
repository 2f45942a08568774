"""Content-addressed document store: files named by their SHA-256, outside any web root.

A file is written once under a temporary name and renamed into place, so a reader never sees a
half-written document; the same content uploaded twice is stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from flask_babel import gettext as _

from ca_service.errors import NotFound

_SHA256 = re.compile(r"[0-9a-f]{64}")


class DocumentStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise NotFound(_("No such document."))
        return self.root / sha256[:2] / sha256

    def put(self, content: bytes) -> str:
        """Store ``content`` and return its SHA-256 (hex)."""
        digest = hashlib.sha256(content).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as sink:
                sink.write(content)
                sink.flush()
                os.fsync(sink.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        """The stored content; checked against its name, so a corrupted file is never served.

        :raises NotFound: when there is no such document (or it no longer matches its hash).
        """
        try:
            content = self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(_("The document's file is missing from the document store.")) from None
        if hashlib.sha256(content).hexdigest() != sha256:
            raise NotFound(_("The document's file is damaged (its SHA-256 no longer matches)."))
        return content
