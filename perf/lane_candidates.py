#!/usr/bin/env python3
"""The two candidates for the local lane (issue 12), measured before one was
chosen: a round trip of a 64-byte message between two processes, each
running an asyncio loop that waits with ``loop.add_reader`` (no extra
thread), in alternating chunks:

- ``socket``: a Unix stream socket pair; the message is written into the
  socket and read from it;
- ``ring``: a shared mapping (one slot per direction) with an eventfd
  doorbell per direction; the message is copied into the mapping and the
  doorbell rung, the reader copies it out after the doorbell.

Both cost one system call to send and one to receive and wake the peer
the same way (epoll); the ring saves the kernel's copy of the bytes, which
for small messages is nothing next to the wake-up. Prints p50/p99 of both
and their ratio.

    .venv/bin/python perf/lane_candidates.py [--rounds 10] [--chunk 500]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import socket
import statistics
import time

MSG = b"x" * 64


def _echo_socket(fd: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def readable() -> None:
            data = os.read(fd, 65536)
            if not data:
                if not done.done():
                    done.set_result(None)
                return
            os.write(fd, data)

        loop.add_reader(fd, readable)
        await done

    asyncio.run(main())


def _echo_ring(shm: mmap.mmap, bell_in: int, bell_out: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def readable() -> None:
            n = int.from_bytes(os.read(bell_in, 8), "little")
            if n >= 1 << 40:
                if not done.done():
                    done.set_result(None)
                return
            shm[4096 : 4096 + len(MSG)] = shm[0 : len(MSG)]
            os.write(bell_out, (1).to_bytes(8, "little"))

        loop.add_reader(bell_in, readable)
        await done

    asyncio.run(main())


async def _time_socket(fd: int, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        fut = loop.create_future()
        loop.add_reader(fd, lambda f=fut: f.done() or f.set_result(os.read(fd, 65536)))
        t0 = time.perf_counter()
        os.write(fd, MSG)
        await fut
        out.append(time.perf_counter() - t0)
        loop.remove_reader(fd)
    return out


async def _time_ring(shm: mmap.mmap, bell_out: int, bell_in: int, n: int) -> list[float]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        fut = loop.create_future()

        def readable(f: asyncio.Future[bytes] = fut) -> None:
            os.read(bell_in, 8)
            if not f.done():
                f.set_result(shm[4096 : 4096 + len(MSG)])

        loop.add_reader(bell_in, readable)
        t0 = time.perf_counter()
        shm[0 : len(MSG)] = MSG
        os.write(bell_out, (1).to_bytes(8, "little"))
        await fut
        out.append(time.perf_counter() - t0)
        loop.remove_reader(bell_in)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=500)
    a = ap.parse_args()
    mine, theirs = socket.socketpair()
    shm = mmap.mmap(-1, 8192)
    to_echo, from_echo = os.eventfd(0), os.eventfd(0)
    pid = os.fork()
    if pid == 0:
        mine.close()
        if os.fork() == 0:
            _echo_ring(shm, to_echo, from_echo)
            os._exit(0)
        _echo_socket(theirs.fileno())
        os.wait()
        os._exit(0)
    theirs.close()
    samples: dict[str, list[float]] = {"socket": [], "ring": []}

    async def run() -> None:
        await _time_socket(mine.fileno(), 200)
        await _time_ring(shm, to_echo, from_echo, 200)
        for r in range(a.rounds):
            order = ("socket", "ring") if r % 2 == 0 else ("ring", "socket")
            for name in order:
                if name == "socket":
                    samples[name] += await _time_socket(mine.fileno(), a.chunk)
                else:
                    samples[name] += await _time_ring(shm, to_echo, from_echo, a.chunk)

    asyncio.run(run())
    os.write(to_echo, (1 << 41).to_bytes(8, "little"))
    mine.close()
    os.waitpid(pid, 0)
    print(f"{'candidate':10} {'calls':>6} {'p50 us':>8} {'p99 us':>8}")
    p = {}
    for name, xs in samples.items():
        xs.sort()
        p[name] = (statistics.median(xs) * 1e6, xs[int(len(xs) * 0.99)] * 1e6)
        print(f"{name:10} {len(xs):6} {p[name][0]:8.1f} {p[name][1]:8.1f}")
    print(f"ring / socket: p50 {p['ring'][0] / p['socket'][0]:.2f}x, "
          f"p99 {p['ring'][1] / p['socket'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
