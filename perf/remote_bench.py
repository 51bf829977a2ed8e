"""A 64 MiB array to a remote extension over tcp with CURVE, against a plain
TCP socket on the same link, in one run (issue 14's goal: >= 50%).

Two network namespaces joined by a veth pair (made here: needs root and
``ip``). The host side runs in the first, the far side in the second:

- ``plain``: a client sends 64 MiB over one TCP connection (an 8-byte
  length, then the bytes; sendall of one buffer) and a server reads it all
  (recv_into a preallocated buffer) and answers 8 bytes;
- ``remote``: ``await ext.size(array)`` to a remote extension (this
  folder's ``remote_ext``, run by ``python -m pyisolate.remote``), which
  answers the array's nbytes; ``remote_thp``: the same to a second runner
  started with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, as RayLauncher
  starts runners;
- ``crypto``: CURVE's own work alone, in this process: the payload
  encrypted, then decrypted, in 1 MiB frames as ZeroMQ's CURVE does it
  (libsodium's ``crypto_box_easy_afternm``/``crypto_box_open_easy_afternm``,
  through ctypes). One CURVE connection encrypts in the sender's ZeroMQ I/O
  thread and decrypts in the receiver's, so even with both overlapping
  perfectly it cannot move the payload faster than the slower of the two:
  ``plain / max(encrypt, decrypt)`` is the ceiling of the remote ratio on
  this machine, printed beside the goal.

They take turns (A B C, C B A, ...) after a warm-up; medians, min and max per
side and the ratio of the medians' throughputs are printed, and written as
JSON with ``--json``.

CPU accounting (the ``cpu`` columns): for each timed turn, the CPU time
(user and system) of the processes doing the work, all their threads
(/proc/PID/task/TID/schedstat, read before and after): this host process
(the broker and its ZeroMQ I/O threads are in it; not its children) and
the side's far process with its descendants (the plain server, or the
runner), summed per side. A side that needs C CPU
seconds per transfer cannot finish faster than C / (the machine's CPUs),
however it spreads the work (striping over connections included, which
adds work): ``plain / (C / CPUs)`` is the best ratio that side can reach
on this machine, printed beside the goal. ``busy`` is the whole machine's
non-idle CPU time over the timed turns (others' work included), per CPU.

    sudo .venv/bin/python perf/remote_bench.py [--rounds 8] [--mib 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The remote runners measured, by the environment they get: as started by
# hand, and as RayLauncher starts them (malloc's huge pages).
FAR_SIDES: dict[str, dict[str, str]] = {
    "remote": {},
    "remote_thp": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}

SERVER = r"""
import socket, struct, sys
srv = socket.create_server((sys.argv[1], 0))
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(int(sys.argv[2]))
view = memoryview(buf)
while True:
    head = conn.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        break
    n = struct.unpack("!Q", head)[0]
    got = 0
    while got < n:
        k = conn.recv_into(view[got:n])
        if not k:
            sys.exit(1)
        got += k
    conn.sendall(struct.pack("!Q", got))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def make_link() -> tuple[str, str, str, str, str]:
    """Two namespaces and a veth pair; (ns a, ns b, addr a, addr b, tag)."""
    tag = str(os.getpid() % 100000)
    a, b = f"pyib-{tag}-a", f"pyib-{tag}-b"
    dev_a, dev_b = f"pyib{tag}a", f"pyib{tag}b"
    net = f"10.{177 + os.getpid() % 50}.{os.getpid() % 250}"
    _ip("netns", "add", a)
    _ip("netns", "add", b)
    _ip("link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
    _ip("link", "set", dev_a, "netns", a)
    _ip("link", "set", dev_b, "netns", b)
    for ns, dev, host in ((a, dev_a, 1), (b, dev_b, 2)):
        _ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    return a, b, f"{net}.1", f"{net}.2", tag


_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user and system) so far of this process (not its
    children) and of pids and their descendants, each counted once, all
    their threads: each thread's run time in nanoseconds from
    /proc/PID/task/TID/schedstat (stat's utime/stime count 10 ms ticks)."""
    total = 0
    for pid in {os.getpid(), *(p for root in pids for p in _tree(root))}:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # ended meanwhile
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                continue
    return total / 1e9


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine so far (all CPUs)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK  # less idle, iowait


def drop_link(a: str, b: str) -> None:
    for ns in (a, b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


FRAME = 1 << 20  # ZeroMQ CURVE encrypts frame by frame; pyisolate sends 1 MiB frames


def crypto_timer(nbytes: int) -> tuple[object, object]:
    """Two timers of CURVE's cryptography on nbytes in FRAME-sized frames:
    (encrypt, decrypt), each returning its seconds."""
    name = ctypes.util.find_library("sodium")
    if name is None:
        raise SystemExit("remote_bench: libsodium not found (the crypto row needs it)")
    na = ctypes.CDLL(name)
    if na.sodium_init() < 0:
        raise SystemExit("remote_bench: sodium_init failed")
    pk, sk, key = (ctypes.create_string_buffer(32) for _ in range(3))
    nonce = ctypes.create_string_buffer(24)
    if na.crypto_box_keypair(pk, sk) != 0 or na.crypto_box_beforenm(key, pk, sk) != 0:
        raise SystemExit("remote_bench: libsodium could not make a key")
    plain = ctypes.create_string_buffer(b"\1" * FRAME, FRAME)
    boxed = ctypes.create_string_buffer(FRAME + 16)
    frames = max(1, nbytes // FRAME)

    def encrypt() -> float:
        t0 = time.perf_counter()
        for _ in range(frames):
            na.crypto_box_easy_afternm(boxed, plain, ctypes.c_ulonglong(FRAME), nonce, key)
        return time.perf_counter() - t0

    def decrypt() -> float:
        t0 = time.perf_counter()
        for _ in range(frames):
            if na.crypto_box_open_easy_afternm(
                plain, boxed, ctypes.c_ulonglong(FRAME + 16), nonce, key
            ):
                raise SystemExit("remote_bench: a frame did not decrypt")
        return time.perf_counter() - t0

    return encrypt, decrypt


async def host_role(args: argparse.Namespace) -> dict[str, object]:
    """In namespace a: both sides' clients, taking turns."""
    import numpy as np

    import pyisolate

    nbytes = args.mib << 20
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen(
        ["ip", "netns", "exec", args.far_ns, sys.executable, "-c", SERVER, args.far_ip,
         str(nbytes)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    port = int(server.stdout.readline())
    sock = socket.create_connection((args.far_ip, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = np.ones(nbytes // 4, dtype=np.float32)
    raw = memoryview(payload).cast("B")

    def plain() -> float:
        t0 = time.perf_counter()
        sock.sendall(struct.pack("!Q", nbytes))
        sock.sendall(raw)
        got = struct.unpack("!Q", sock.recv(8, socket.MSG_WAITALL))[0]
        t = time.perf_counter() - t0
        assert got == nbytes, got
        return t

    venvs = tempfile.mkdtemp(prefix="pyi-bench-")
    mgr = pyisolate.ExtensionManager(
        pyisolate.ExtensionBase,
        pyisolate.ExtensionManagerConfig(
            venv_root_path=venvs, remote_endpoint=f"tcp://{args.host_ip}:*"
        ),
    )
    runners: list[subprocess.Popen[bytes]] = []
    # the host's own array: pyisolate.empty (shared memory), as a user's
    arr = pyisolate.empty(payload.shape, "float32")
    arr[...] = payload
    try:
        exts = {}
        for side, extra in FAR_SIDES.items():
            ext = mgr.load_extension(
                pyisolate.ExtensionConfig(
                    name=side, module_path=str(HERE / "remote_ext"), remote=True
                )
            )
            far_env = dict(env, PYI_TICKET=ext.ticket or "", **extra)
            runners.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        args.far_ns,
                        sys.executable,
                        "-m",
                        "pyisolate.remote",
                        "-",
                        str(HERE / "remote_ext"),
                    ],
                    env=far_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
            await asyncio.wait_for(ext.wait_ready(), 120)
            exts[side] = ext

        async def remote(side: str, a: object = arr) -> float:
            t0 = time.perf_counter()
            got = await exts[side].size(a)
            t = time.perf_counter() - t0
            assert got == nbytes, got
            return t

        encrypt, decrypt = crypto_timer(nbytes)

        async def turn(side: str) -> float:
            if side == "plain":
                return plain()
            if side == "encrypt":
                return encrypt()  # type: ignore[operator]
            if side == "decrypt":
                return decrypt()  # type: ignore[operator]
            return await remote(side)

        sides = ["plain", *FAR_SIDES, "encrypt", "decrypt"]
        # whose CPU time each side costs: this process and its far end
        workers = {"plain": [server.pid], "encrypt": [], "decrypt": []}
        for side, far in zip(FAR_SIDES, runners, strict=True):
            workers[side] = [far.pid]
        for _ in range(2):  # warm-up
            for side in sides:
                await turn(side)
        samples: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, float] = dict.fromkeys(sides, 0.0)
        busy: dict[str, float] = dict.fromkeys(sides, 0.0)
        window: dict[str, float] = dict.fromkeys(sides, 0.0)  # wall time CPU was counted in
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                # the window CPU is counted in: from before the first reading
                # to after the last (the readings take a little of it)
                w0 = time.perf_counter()
                b0, c0 = machine_busy(), cpu_seconds(workers[side])
                samples[side].append(await turn(side))
                cpu[side] += cpu_seconds(workers[side]) - c0
                busy[side] += machine_busy() - b0
                window[side] += time.perf_counter() - w0
        for ext in exts.values():
            await ext.stop()
    finally:
        await mgr.stop_all()
        sock.close()
        server.wait(timeout=30)
        for far in runners:
            try:
                far.wait(timeout=30)
            except subprocess.TimeoutExpired:
                far.kill()
        subprocess.run(["rm", "-rf", venvs])
    mib = nbytes / (1 << 20)
    ncpu = os.cpu_count() or 1
    out: dict[str, object] = {"mib": args.mib, "rounds": args.rounds}
    for side, ts in samples.items():
        med = statistics.median(ts)
        out[side] = {
            "median_s": med,
            "min_s": min(ts),
            "max_s": max(ts),
            "mib_per_s": mib / med,
            # CPU seconds per transfer (host + far side), and per second of wall
            "cpu_s": cpu[side] / len(ts),
            "cpu_per_wall": cpu[side] / window[side],
            "machine_busy_per_cpu": busy[side] / window[side] / ncpu,
        }
    plain_med = statistics.median(samples["plain"])
    out["ratio"] = {side: plain_med / statistics.median(samples[side]) for side in FAR_SIDES}
    best = max(out["ratio"].values())
    crypto = max(statistics.median(samples["encrypt"]), statistics.median(samples["decrypt"]))
    out["goal"] = {
        "minimum": 0.5,
        "measured": best,
        "pass": best >= 0.5,
        "curve_ceiling": plain_med / crypto,
        "cpus": ncpu,
        # the best ratio each remote side's CPU work allows on ncpu CPUs
        "cpu_bound": {side: plain_med / (cpu[side] / args.rounds / ncpu) for side in FAR_SIDES},
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--json", default="")
    parser.add_argument("--role", default="", help=argparse.SUPPRESS)
    parser.add_argument("--far-ns", default="", help=argparse.SUPPRESS)
    parser.add_argument("--far-ip", default="", help=argparse.SUPPRESS)
    parser.add_argument("--host-ip", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "host":
        print(json.dumps(asyncio.run(host_role(args))), flush=True)
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("remote_bench: needs root (ip netns)\n")
        return 2
    a, b, ip_a, ip_b, _ = make_link()
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", a, sys.executable, __file__, "--role", "host",
             "--far-ns", b, "--far-ip", ip_b, "--host-ip", ip_a, "--rounds", str(args.rounds),
             "--mib", str(args.mib)],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        drop_link(a, b)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for side in ("plain", *FAR_SIDES, "encrypt", "decrypt"):
        s = result[side]
        ratio = f"  ratio {result['ratio'][side]:.2f}" if side in FAR_SIDES else ""
        print(
            f"{side:12} median {s['median_s'] * 1000:7.1f} ms ({s['mib_per_s']:7.1f} MiB/s)  "
            f"min {s['min_s'] * 1000:.1f}  max {s['max_s'] * 1000:.1f} ms  "
            f"cpu {s['cpu_s'] * 1000:6.1f} ms ({s['cpu_per_wall']:.2f} x wall)  "
            f"busy {s['machine_busy_per_cpu']:.2f}{ratio}"
        )
    verdict = "ok" if result["goal"]["pass"] else "MISS"
    print(f"best ratio to plain TCP: {result['goal']['measured']:.2f} (goal >= 0.50: {verdict})")
    print(
        f"CURVE's ceiling on this machine (plain / the slower of encrypt, decrypt): "
        f"{result['goal']['curve_ceiling']:.2f}"
    )
    goal = result["goal"]
    for side, bound in goal["cpu_bound"].items():
        print(
            f"CPU-time bound of {side} on {goal['cpus']} CPUs (plain / (its CPU seconds / "
            f"{goal['cpus']})): {bound:.2f} (goal 0.50)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
