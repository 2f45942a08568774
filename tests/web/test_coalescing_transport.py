"""The event-loop worker's transport: what uvicorn writes in one loop iteration reaches the
client in one piece, in order, before the connection closes; nothing is written after the
client went away."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from ca_service.serving import _CoalescingTransport


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def _connected() -> tuple[_CoalescingTransport, _Sink, socket.socket]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_accepted_socket(_Sink, ours)
    return _CoalescingTransport(transport, loop), protocol, peer


def test_writes_of_one_iteration_arrive_together_and_before_the_close() -> None:
    async def scenario() -> None:
        transport, protocol, peer = await _connected()
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(memoryview(b"body"))
        assert transport.get_write_buffer_size() == 23  # held until the iteration ends
        try:
            peer.recv(100)
        except BlockingIOError:
            pass
        else:
            raise AssertionError("a write left before the iteration ended")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert peer.recv(100) == b"HTTP/1.1 200 OK\r\n\r\nbody"

        transport.writelines([b"last", b" words"])
        transport.close()  # flushes first
        await protocol.lost.wait()
        peer.setblocking(True)
        assert peer.recv(100) == b"last words"
        assert peer.recv(100) == b""  # then the close
        peer.close()

    uvloop.run(scenario())


class _Closed(asyncio.Transport):
    """A transport whose connection is already gone; it records what it is asked to write."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))


def test_nothing_is_written_once_the_connection_is_closing() -> None:
    async def scenario() -> list[bytes]:
        closed = _Closed()
        transport = _CoalescingTransport(closed, asyncio.get_running_loop())
        transport.write(b"too late")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return closed.written

    assert uvloop.run(scenario()) == []
