"""An extension that tries things from inside its process and says what
happened: "ok", or the errno's name (EACCES, EPERM, ...) of the failure.
test_sandbox.py runs it sandboxed (and, as a control, not)."""

import asyncio
import ctypes
import errno
import gc
import os
import socket
import tempfile

from pyisolate import ExtensionBase

_PTRACE_SEIZE = 0x4206  # attaches without stopping the tracee
_PTRACE_DETACH = 17


def _outcome(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def _read(path):
    if os.path.isdir(path):
        os.listdir(path)
    else:
        with open(path, "rb") as f:
            f.read(1)


def _write(path):
    with open(path, "w") as f:
        f.write("written from a sandboxed extension")


def _connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass


def _udp():
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()


def _abstract(name):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect("\0" + name)


def _ptrace(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(_PTRACE_SEIZE, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
    libc.ptrace(_PTRACE_DETACH, pid, None, None)


class Probe(ExtensionBase):
    async def environment(self):
        return dict(os.environ)

    async def getpid(self):
        return os.getpid()

    async def read(self, path):
        return _outcome(_read, path)

    async def write(self, path):
        return _outcome(_write, path)

    async def use_scratch(self):
        """Write a file with tempfile and one in the cache dir; where they went."""
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"x")
        cache = os.path.join(os.environ["XDG_CACHE_HOME"], "probe")
        os.makedirs(cache, exist_ok=True)
        _write(os.path.join(cache, "file"))
        return f.name

    async def connect(self, port):
        return _outcome(_connect, port)

    async def udp(self):
        return _outcome(_udp)

    async def abstract(self, name):
        return _outcome(_abstract, name)

    async def signal(self, pid):
        return _outcome(os.kill, pid, 0)

    async def ptrace(self, pid):
        return _outcome(_ptrace, pid)

    async def region_names(self, count):
        import pyisolate

        return [pyisolate.region_name(pyisolate.empty(8, "u1")) for _ in range(count)]

    async def echo(self, value):
        return value

    def allocate(self, megabytes):
        block = bytearray(megabytes << 20)
        return len(block)

    def spin(self):
        while True:
            pass

    def open_files(self, most):
        """Open /dev/null until it fails (at most ``most``); how many opened
        and the failure."""
        files = []
        try:
            while len(files) < most:
                files.append(open(os.devnull))
            return len(files), "ok"
        except OSError as exc:
            return len(files), errno.errorcode[exc.errno]
        finally:
            for f in files:
                f.close()

    def processes(self, most):
        """Start child processes that wait, until it fails (at most
        ``most``); how many started and the failure. They are ended."""
        r, w = os.pipe()
        children = []
        failure = "ok"
        try:
            while len(children) < most:
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    os.read(r, 1)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            failure = errno.errorcode[exc.errno]
        finally:
            os.close(w)
            os.close(r)
            for pid in children:
                os.waitpid(pid, 0)
        return len(children), failure

    async def offer(self, service):
        """Offer ``service`` with this process's own broker connection and
        token; the broker's answer."""
        from pyisolate._rpc import Node

        node = next(o for o in gc.get_objects() if isinstance(o, Node) and o.worker is not None)
        try:
            await asyncio.wait_for(node.offer(service), 10)
            return "accepted"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
