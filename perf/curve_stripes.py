"""Raw experiment for issue 14's throughput goal: can 64 MiB over CURVE reach
half of plain TCP's throughput on this machine if the payload is striped
over several connections, or if our own CPU work on arrival is cut?

pyzmq only (no pyisolate), across two network namespaces joined by a veth
pair (``remote_bench.make_link``; needs root). A receiver process in the
second namespace, a sender in the first; the variants take turns (A B C,
C B A, ...) after a warm-up, each transfer timed from the first send to the
receiver's 8-byte answer:

- ``tcp``: one plain TCP socket (``remote_bench``'s server: sendall / recv_into);
- ``zmq_plain``: ZeroMQ over tcp without CURVE, one connection;
- ``curve xN``: 64 MiB as 1 MiB frames (sent without a copy, as pyisolate
  lends the region's memory) spread round-robin over N DEALER->ROUTER
  connections, each with its own context (its own I/O thread); ``ctx1``:
  one context with io_threads=N; the receiver copies every frame to its
  offset in the destination, then answers;
- ``fresh`` (the default, as pyisolate's runner does) makes a new shared
  region (mmap MAP_SHARED|MAP_ANONYMOUS) per array and unmaps it after;
  ``reuse`` copies into one region kept (the pool a runner could keep);
- ``f256k``, ``f4m``: other frame sizes; ``buf4m``: 4 MiB SO_SNDBUF/SO_RCVBUF.

CPU accounting as in remote_bench: CPU seconds of the sender and receiver
processes (all threads) per transfer; ``plain_tcp / (cpu / CPUs)`` is the best
ratio a variant's work allows on this machine.

    sudo .venv/bin/python perf/curve_stripes.py [--rounds 8] [--mib 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remote_bench import SERVER, cpu_seconds, drop_link, machine_busy, make_link

MIB = 1 << 20


@dataclass(frozen=True)
class Variant:
    name: str
    conns: int = 1
    curve: bool = True
    frame: int = MIB
    one_ctx: bool = False  # one context, io_threads=conns (else a context per connection)
    fresh: bool = True  # a new region per array on the receiver (else one reused)
    sockbuf: int = 0  # SO_SNDBUF / SO_RCVBUF (0: the kernel's)


VARIANTS = [
    Variant("zmq_plain", curve=False),
    Variant("curve x1"),
    Variant("curve x2", conns=2),
    Variant("curve x4", conns=4),
    Variant("curve x2 ctx1", conns=2, one_ctx=True),
    Variant("curve x1 reuse", fresh=False),
    Variant("curve x2 reuse", conns=2, fresh=False),
    Variant("curve x1 f256k", frame=256 << 10),
    Variant("curve x1 f4m", frame=4 * MIB),
    Variant("curve x1 buf4m", sockbuf=4 * MIB),
]


def _contexts(zmq: object, v: Variant) -> list[object]:
    z: object = zmq
    if v.one_ctx:
        return [z.Context(io_threads=v.conns)]  # type: ignore[attr-defined]
    return [z.Context() for _ in range(v.conns)]  # type: ignore[attr-defined]


def _socket(ctx: object, kind: int, v: Variant, curve: Mapping[str, object]) -> Any:
    """A socket of kind for variant v: no linger, the CURVE options (when
    v.curve) and socket buffers (when v.sockbuf)."""
    s = ctx.socket(kind)  # type: ignore[attr-defined]
    s.linger = 0
    if v.curve:
        for option, key in curve.items():
            setattr(s, option, key)
    if v.sockbuf:
        s.rcvbuf = s.sndbuf = v.sockbuf
    return s


def receiver(args: argparse.Namespace) -> None:
    """In the far namespace: bind every variant's sockets, print the ports,
    then serve transfers until stdin closes."""
    import zmq

    nbytes = args.mib * MIB
    server_public, server_secret = args.server_public.encode(), args.server_secret.encode()
    server = {"curve_server": True, "curve_secretkey": server_secret,
              "curve_publickey": server_public}  # fmt: skip
    poller = zmq.Poller()
    owner: dict[zmq.Socket, tuple[int, int]] = {}  # socket -> (variant, stripe)
    ports: list[list[int]] = []
    socks: list[list[zmq.Socket]] = []
    for vi, v in enumerate(VARIANTS):
        ctxs = _contexts(zmq, v)
        row, prow = [], []
        for i in range(v.conns):
            s = _socket(ctxs[i % len(ctxs)], zmq.ROUTER, v, server)
            prow.append(s.bind_to_random_port(f"tcp://{args.far_ip}"))
            poller.register(s, zmq.POLLIN)
            owner[s] = (vi, i)
            row.append(s)
        ports.append(prow)
        socks.append(row)
    print(json.dumps(ports), flush=True)
    kept = mmap.mmap(-1, nbytes, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    kept.write(b"\0" * nbytes)  # faulted in once
    state: dict[int, tuple[mmap.mmap, int]] = {}  # variant -> (region, bytes in)
    ids: dict[int, bytes] = {}
    stdin_fd = sys.stdin.fileno()
    poller.register(stdin_fd, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            if sock == stdin_fd:
                return
            vi, stripe = owner[sock]  # type: ignore[index]
            v = VARIANTS[vi]
            parts = sock.recv_multipart(copy=False)  # type: ignore[union-attr]
            ident, frames = parts[0].bytes, parts[1:]
            if stripe == 0:
                ids[vi] = ident
            if vi not in state:
                region = (
                    mmap.mmap(-1, nbytes, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
                    if v.fresh
                    else kept
                )
                state[vi] = (region, 0)
            region, got = state[vi]
            # frames of stripe s are the array's frames s, s + conns, ...; the
            # first 8 bytes of each frame's slot are its index in the array
            for f in frames:
                buf = f.buffer
                index = struct.unpack_from("!Q", buf)[0]
                off = index * v.frame
                region[off : off + len(buf) - 8] = buf[8:]
                got += len(buf) - 8
            state[vi] = (region, got)
            if got >= nbytes:
                del state[vi]
                if v.fresh:
                    region.close()
                socks[vi][0].send_multipart([ids[vi], struct.pack("!Q", got)])


def sender(args: argparse.Namespace) -> dict[str, object]:
    """In the host namespace: the variants, taking turns."""
    import zmq

    nbytes = args.mib * MIB
    server_public, server_secret = zmq.curve_keypair()
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    far = subprocess.Popen(
        ["ip", "netns", "exec", args.far_ns, sys.executable, __file__, "--role", "receiver",
         "--far-ip", args.far_ip, "--mib", str(args.mib),
         "--server-public", server_public.decode(), "--server-secret", server_secret.decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    tcp_server = subprocess.Popen(
        ["ip", "netns", "exec", args.far_ns, sys.executable, "-c", SERVER, args.far_ip,
         str(nbytes)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert far.stdout is not None and tcp_server.stdout is not None
    ports = json.loads(far.stdout.readline())
    tcp = socket.create_connection((args.far_ip, int(tcp_server.stdout.readline())))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytearray(b"\1" * nbytes)
    raw = memoryview(payload)
    client_public, client_secret = zmq.curve_keypair()
    client = {"curve_serverkey": server_public, "curve_publickey": client_public,
              "curve_secretkey": client_secret}  # fmt: skip
    conns: list[list[zmq.Socket]] = []
    # per variant, per stripe: the frames (an 8-byte index, then the slice)
    stripes: list[list[list[bytes]]] = []
    prepared: dict[int, list[bytes]] = {}  # frame size -> the frames
    for v, vports in zip(VARIANTS, ports, strict=True):
        ctxs = _contexts(zmq, v)
        row = []
        for i, port in enumerate(vports):
            s = _socket(ctxs[i % len(ctxs)], zmq.DEALER, v, client)
            s.connect(f"tcp://{args.far_ip}:{port}")
            row.append(s)
        conns.append(row)
        # The sender lends its memory (copy=False) as pyisolate does; the
        # index travels in its own 8 bytes at the head of each frame, so
        # the frames here are prepared once (the copy is not timed).
        if v.frame not in prepared:
            prepared[v.frame] = [
                struct.pack("!Q", k) + bytes(raw[k * v.frame : (k + 1) * v.frame])
                for k in range(nbytes // v.frame)
            ]
        frames = prepared[v.frame]
        stripes.append([frames[s :: v.conns] for s in range(v.conns)])

    def zmq_turn(vi: int) -> float:
        t0 = time.perf_counter()
        for sock, frames in zip(conns[vi], stripes[vi], strict=True):
            sock.send_multipart(frames, copy=False)
        got = struct.unpack("!Q", conns[vi][0].recv())[0]
        t = time.perf_counter() - t0
        assert got == nbytes, got
        return t

    def tcp_turn() -> float:
        t0 = time.perf_counter()
        tcp.sendall(struct.pack("!Q", nbytes))
        tcp.sendall(raw)
        got = struct.unpack("!Q", tcp.recv(8, socket.MSG_WAITALL))[0]
        t = time.perf_counter() - t0
        assert got == nbytes, got
        return t

    names = ["tcp", *(v.name for v in VARIANTS)]
    workers = {"tcp": [tcp_server.pid]}  # (and this process)
    workers.update({v.name: [far.pid] for v in VARIANTS})

    def turn(name: str) -> float:
        if name == "tcp":
            return tcp_turn()
        return zmq_turn(next(i for i, v in enumerate(VARIANTS) if v.name == name))

    try:
        for _ in range(2):  # warm-up (CURVE handshakes, first faults)
            for name in names:
                turn(name)
        samples: dict[str, list[float]] = {n: [] for n in names}
        cpu = dict.fromkeys(names, 0.0)
        busy = dict.fromkeys(names, 0.0)
        window = dict.fromkeys(names, 0.0)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                # the window CPU is counted in: from before the first reading
                # to after the last (the readings take a little of it)
                w0 = time.perf_counter()
                b0, c0 = machine_busy(), cpu_seconds(workers[name])
                samples[name].append(turn(name))
                cpu[name] += cpu_seconds(workers[name]) - c0
                busy[name] += machine_busy() - b0
                window[name] += time.perf_counter() - w0
    finally:
        tcp.close()
        assert far.stdin is not None
        far.stdin.close()
        far.wait(timeout=30)
        tcp_server.wait(timeout=30)
        for row in conns:
            for s in row:
                s.close()
    ncpu = os.cpu_count() or 1
    plain = statistics.median(samples["tcp"])
    out: dict[str, object] = {"mib": args.mib, "rounds": args.rounds, "cpus": ncpu}
    rows = {}
    for name in names:
        med = statistics.median(samples[name])
        cpu_s = cpu[name] / args.rounds
        rows[name] = {
            "median_s": med,
            "min_s": min(samples[name]),
            "max_s": max(samples[name]),
            "ratio": plain / med,
            "cpu_s": cpu_s,
            "cpu_per_wall": cpu[name] / window[name],
            "machine_busy_per_cpu": busy[name] / window[name] / ncpu,
            "cpu_bound": plain / (cpu_s / ncpu),
        }
    out["variants"] = rows
    out["config"] = {v.name: asdict(v) for v in VARIANTS}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--json", default="")
    for hidden in ("--role", "--far-ns", "--far-ip", "--server-public", "--server-secret"):
        parser.add_argument(hidden, default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "receiver":
        receiver(args)
        return 0
    if args.role == "sender":
        print(json.dumps(sender(args)), flush=True)
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("curve_stripes: needs root (ip netns)\n")
        return 2
    a, b, _ip_a, ip_b, _ = make_link()
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", a, sys.executable, __file__, "--role", "sender",
             "--far-ns", b, "--far-ip", ip_b, "--rounds", str(args.rounds),
             "--mib", str(args.mib)],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        drop_link(a, b)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{args.mib} MiB, medians of {args.rounds}, {result['cpus']} CPUs")
    for name, r in result["variants"].items():
        print(
            f"{name:16} {r['median_s'] * 1000:7.1f} ms (min {r['min_s'] * 1000:6.1f}, max "
            f"{r['max_s'] * 1000:6.1f})  ratio {r['ratio']:.2f}  cpu {r['cpu_s'] * 1000:6.1f} ms "
            f"({r['cpu_per_wall']:.2f} x wall, busy {r['machine_busy_per_cpu']:.2f})  "
            f"cpu bound {r['cpu_bound']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
