"""Files uploaded to the console: a bound of their own (`console: upload_max_mb`), far above
the small one of every other body, enforced while the body is read; and the uploaded file
kept in a temporary folder for as long as it is used, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from starlette.datastructures import Headers, UploadFile

from .actions import ActionError

MEBIBYTE = 1 << 20


class UploadTooLarge(ActionError):
    """The body of an upload grew past the route's bound (413)."""

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than {limit // MEBIBYTE} MiB, the console's bound "
                         f"(console: upload_max_mb in the configuration)", status=413)


class UploadLimit:
    """ASGI: the body of this route may be `limit` bytes; a declared length above it is refused
    before anything is read, and a body that grows past it while being read is refused then,
    never buffered whole. The route's handler answers the UploadTooLarge it raises."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        received = 0

        async def limited():
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise UploadTooLarge(self.limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise UploadTooLarge(self.limit)
            return message
        await self.app(scope, limited, send)


def shown_name(upload: UploadFile) -> str:
    """The name the sender gave the file, to show (escaped) and never to use as a path."""
    name = "".join(c for c in (upload.filename or "") if c.isprintable())
    return (name[:120] + "...") if len(name) > 123 else (name or "upload")


@contextlib.contextmanager
def saved(upload: UploadFile) -> Iterator[str]:
    """The uploaded file as a file of a temporary folder of its own (whatever the sender named
    it), removed when done."""
    folder = tempfile.mkdtemp(prefix="dicom-rules-upload-")
    try:
        path = os.path.join(folder, "upload.dcm")
        upload.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out, MEBIBYTE)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
