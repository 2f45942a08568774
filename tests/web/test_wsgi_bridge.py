"""The event-loop worker's WSGI bridge (``serving.WsgiBridge``), driven as uvicorn drives it:
a small answer leaves in one piece when the app returns, a large one streams; small bodies are
read before the app runs, large and chunked ones as the app reads them; PEP 3333's
``start_response``, ``write`` and ``close`` keep their meaning."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ca_service.serving import BUFFER_BYTES, PREREAD_BYTES, WsgiBridge

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def _scope(method: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"a=1",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 5000),
    }


def call(
    app: WSGIApplication,
    body: bytes = b"",
    *,
    parts: int = 2,
    length: bool = True,
    disconnect_early: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One request through the bridge: the messages sent, and the loop's log of what it was
    asked for ('receive' whenever the app side asked the loop for more of the body)."""
    step = max(1, -(-len(body) // parts))
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    sent: list[dict[str, Any]] = []
    log: list[str] = []
    headers = {"host": "ca.test", "content-type": "application/octet-stream"}
    if length:
        headers["content-length"] = str(len(body))

    async def scenario() -> None:
        done = asyncio.Event()
        loop_thread = threading.get_ident()

        async def receive() -> dict[str, Any]:
            log.append("receive" if threading.get_ident() == loop_thread else "off the loop")
            if disconnect_early and len(pieces) == 1:
                return {"type": "http.disconnect"}
            if pieces:
                return {"type": "http.request", "body": pieces.pop(0), "more_body": len(pieces) > 0}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await WsgiBridge(app, threads=2)(_scope("POST", headers), receive, send)

    asyncio.run(scenario())
    return sent, log


def _body(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent[1:])


def echo(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The request body's length and digest, and what the environ says."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    data = stream.read(int(length)) if length else b"".join(iter(lambda: stream.read(4096), b""))
    answer = (
        f"{len(data)} {hashlib.sha256(data).hexdigest()} {environ['QUERY_STRING']} "
        f"{environ['REMOTE_ADDR']} {environ['HTTP_HOST']}"
    ).encode()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Echo", " yes ")])
    return [answer]


def test_a_small_answer_leaves_in_one_piece_with_its_head() -> None:
    body = b"x" * 1000
    sent, log = call(echo, body)
    start, *rest = sent
    assert start == {
        "type": "http.response.start",
        "status": 201,
        "headers": [(b"content-type", b"text/plain"), (b"x-echo", b"yes")],
    }
    # One body message, the last: the thread handed the whole answer back once.
    assert rest == [
        {
            "type": "http.response.body",
            "body": f"1000 {hashlib.sha256(body).hexdigest()} a=1 127.0.0.1 ca.test".encode(),
        }
    ]
    assert log == ["receive", "receive"]  # both parts read in the loop, before the app ran


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_large_or_chunked_body_is_read_as_the_app_reads_it(length: bool) -> None:
    body = bytes(range(256)) * ((PREREAD_BYTES // 256) + 10)
    sent, log = call(echo, body, parts=4, length=length)
    assert sent[0]["status"] == 201
    assert _body(sent).startswith(f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())
    assert log == ["receive"] * 4  # in the loop, each when the app's thread asked for it


def test_a_large_answer_streams_and_arrives_whole() -> None:
    piece = b"0123456789abcdef" * 4096  # 64 KiB

    def big(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(8):
            yield piece

    sent, _ = call(big)
    assert sent[0]["type"] == "http.response.start"
    bodies = sent[1:]
    assert len(bodies) > 2  # sent while the app still produced it
    assert all(m["more_body"] for m in bodies[:-1])
    assert not bodies[-1].get("more_body")
    assert _body(sent) == piece * 8
    assert len(piece) * 8 > BUFFER_BYTES


def test_write_close_and_a_replaced_head() -> None:
    closed = []

    class Answer:
        def __iter__(self) -> Iterator[bytes]:
            yield b" and iterated"

        def close(self) -> None:
            closed.append(True)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise RuntimeError("changed its mind")
        except RuntimeError:
            write = start_response("500 Internal Server Error", [("X-Second", "2")], sys.exc_info())
        write(b"written")
        return Answer()

    sent, _ = call(app)
    assert sent[0]["status"] == 500
    assert sent[0]["headers"] == [(b"x-second", b"2")]
    assert _body(sent) == b"written and iterated"
    assert closed == [True]


def test_an_app_that_fails_before_answering_raises_to_the_server() -> None:
    def broken(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        call(broken)  # uvicorn answers 500 then


def test_a_client_gone_before_its_body_arrived_reaches_no_app() -> None:
    reached = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reached.append(True)
        start_response("200 OK", [])
        return [b""]

    sent, _ = call(app, b"half of a renewal request", parts=2, disconnect_early=True)
    assert sent == []
    assert reached == []
