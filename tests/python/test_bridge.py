"""The bridge to C (bindings/python): what it guarantees.

- The cffi declarations are made from the public headers at build time:
  every PYI_EXPORT function of include/pyisolate/ is in pyisolate._native.lib,
  with the types the headers give (pid_t, arrays sized by macros), and the
  generator reads the header constructs the library uses (an export macro
  from another header, extern "C", attributes, conditions, static inline
  helpers, internal prototypes left out).
- The bridge's own C compiles clean with -Wall -Wextra -Werror.
- Handles cross as cffi pointers, type-checked.
- Frames of PYI_PY_BIG_FRAME bytes and more leave from the sender's Python
  buffer (held until libzmq is done with them, then given back) and arrive
  as read-only views of the received message (kept alive by the views);
  shorter ones are copied. Large bodies round-trip intact, through the
  broker and through an extension, and repeated sends leak nothing.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import msgpack
import pytest

from conftest import REPO, ext_config, manager, run
from pyisolate import _core
from pyisolate._native import ffi, lib

INCLUDE = REPO / "include" / "pyisolate"
BRIDGE = REPO / "bindings" / "python"
BIG = int(lib.PYI_PY_BIG_FRAME)
MiB = 1 << 20


def _ffi_build():
    spec = importlib.util.spec_from_file_location("pyi_ffi_build", BRIDGE / "ffi_build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look themselves up there
    spec.loader.exec_module(mod)
    return mod


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


# -- declarations ------------------------------------------------------------------
def test_every_exported_function_is_in_lib() -> None:
    names = set()
    for header in sorted(INCLUDE.glob("*.h")):
        text = re.sub(r"(?m)^\s*#.*$", " ", _strip_comments(header.read_text()))
        for m in re.finditer(r"\bPYI_EXPORT\b([^;{]*?)\b(\w+)\s*\(", text):
            names.add(m.group(2))
    assert len(names) > 100  # the scan works
    missing = sorted(n for n in names if not hasattr(lib, n))
    assert not missing, f"PYI_EXPORT functions missing from pyisolate._native.lib: {missing}"
    # The bridge's own functions are there too.
    for name in ("pyi_py_install", "pyi_py_loans", "pyi_py_views"):
        assert hasattr(lib, name)


def test_umbrella_includes_every_public_header() -> None:
    seen, todo = set(), ["pyisolate.h"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += re.findall(r'#\s*include\s+"([^"]+)"', (INCLUDE / name).read_text())
    assert seen == {p.name for p in INCLUDE.glob("*.h")}


def test_cdef_says_what_the_headers_say() -> None:
    cdef = _ffi_build().header_cdef()
    # pid_t, as pyi_region.h declares it (once copied by hand as int).
    region = _strip_comments((INCLUDE / "pyi_region.h").read_text())
    assert re.search(r"pyi_region_sweep\s*\([^)]*\bpid_t creator\)", region)
    assert "int pyi_region_sweep (const char *session, pid_t creator);" in cdef
    assert "typedef int... pid_t;" in cdef
    sweep = ffi.typeof(lib.pyi_region_sweep)
    assert sweep.args[1] is ffi.typeof("pid_t")
    assert ffi.sizeof("pid_t") == 4  # what the C compiler says on Linux
    # An array sized by a macro (once a literal [64]).
    assert "pyi_region_collect (char (*names) [PYI_REGION_MAX_NAME + 1]" in cdef
    names = ffi.typeof(lib.pyi_region_collect).args[0]
    assert names.item.length == lib.PYI_REGION_MAX_NAME + 1
    # Integer macros, from literals and from expressions.
    assert lib.PYI_MAX_NAME == 255 and lib.PYI_REGION_MAX_SIZE == 1 << 40
    # Internal prototypes of a public header (no PYI_EXPORT) stay out.
    assert "pyi_cuda_export" not in cdef and not hasattr(lib, "pyi_cuda_export")


def test_generator_reads_the_header_constructs(tmp_path: Path) -> None:
    import cffi

    gen = _ffi_build()
    (tmp_path / "sub").mkdir()
    (tmp_path / "lib_library.h").write_text("""
#ifndef LIB_LIBRARY_H_INCLUDED
#define LIB_LIBRARY_H_INCLUDED
#ifdef __cplusplus
extern "C" {
#endif
#if defined(PYI_BUILDING)
#   define PYI_EXPORT __attribute__ ((visibility ("default")))
#else
#   define PYI_EXPORT
#endif
#define LIB_NAME 31          /* a comment */
#define LIB_FLAG (1UL << 3)  // another
#define LIB_TEXT "text"
#define LIB_MAX(a, b) ((a) > (b) ? (a) : (b))
PYI_EXPORT const char *lib_last_error (void);
#ifdef __cplusplus
}
#endif
#endif
""")
    (tmp_path / "sub" / "lib_thing.h").write_text("""
#ifndef LIB_THING_H_INCLUDED
#define LIB_THING_H_INCLUDED
#include <sys/types.h>
#include <dlpack/dlpack.h>
#include "../lib_library.h"
#ifdef __cplusplus
extern "C" {
#endif
#ifndef SOME_SYSTEM_MACRO
typedef struct { int from_a_fallback; } DLPackVersion;
#endif
#if LIB_NAME > 16 && !defined(PYI_BUILDING)
#define LIB_BIG 1
#else
#define LIB_SMALL 1
#endif
typedef struct _lib_thing_t lib_thing_t;
typedef void (lib_free_fn) (void *data, void *hint);
typedef struct {
    char name[LIB_NAME + 1];   /* sized by a macro */
    pid_t pid;
    bool ok;
} lib_info_t;
PYI_EXPORT lib_thing_t *lib_thing_new (const char *name,
                                       pid_t owner) __attribute__ ((warn_unused_result));
PYI_EXPORT int lib_thing_names (char (*names) [LIB_NAME + 1], int capacity);
PYI_EXPORT DLManagedTensorVersioned *lib_thing_tensor (lib_thing_t *self, lib_free_fn *fn);
int lib_thing_internal (lib_thing_t *self);
static inline int lib_thing_helper (int x) { if (x) { return 1; } return 0; }
#ifdef __cplusplus
}
#endif
#endif
""")
    (tmp_path / "lib.h").write_text('#include "sub/lib_thing.h"\n#include "lib_library.h"\n')
    (tmp_path / "bridge.h").write_text("int bridge_install (void);\n")
    cdef = gen.header_cdef(str(tmp_path / "lib.h"), str(tmp_path / "bridge.h"))
    # Order: what a header includes comes before it.
    assert cdef.index("lib_last_error") < cdef.index("lib_thing_new")
    for kept in (
        "#define LIB_NAME 31",
        "#define LIB_FLAG ...",
        "#define LIB_BIG 1",
        "lib_thing_t *lib_thing_new (const char *name, pid_t owner);",
        "int bridge_install (void);",
        "typedef int... pid_t;",
        "DLManagedTensorVersioned;",
    ):
        assert kept in cdef, kept
    for dropped in (
        "LIB_TEXT",
        "LIB_MAX",
        "LIB_SMALL",
        "lib_thing_internal",
        "lib_thing_helper",
        "from_a_fallback",
        "__attribute__",
        "PYI_EXPORT",
        "extern",
        "comment",
    ):
        assert dropped not in cdef, dropped
    assert "skipped (condition not known here)" in cdef  # the DLPack-like fallback
    assert "char name[LIB_NAME + 1];" in cdef
    ffi2 = cffi.FFI()
    ffi2.cdef(cdef)  # cffi reads it all, the macro-sized arrays included
    assert ffi2.typeof("lib_thing_t *") and ffi2.typeof("lib_free_fn *")


def test_bridge_c_compiles_clean_with_werror() -> None:
    cc = shutil.which(os.environ.get("CC", "cc"))
    py_include = sysconfig.get_paths().get("include")
    if cc is None or not py_include or not Path(py_include, "Python.h").exists():
        pytest.skip("no C compiler or Python headers")
    sources = sorted(BRIDGE.glob("pyi_py*.c"))
    assert len(sources) >= 3
    for src in sources:
        out = subprocess.run(
            [
                cc,
                "-std=gnu11",
                "-fsyntax-only",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-D_GNU_SOURCE",
                f"-I{REPO / 'include'}",
                f"-I{BRIDGE}",
                "-isystem",
                py_include,
                str(src),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, f"{src.name}:\n{out.stderr}"
    # No C function bodies inside the Python files of the bridge.
    text = (BRIDGE / "ffi_build.py").read_text()
    assert "#include <Python.h>" not in text and "PyObject *" not in text


# -- handles ---------------------------------------------------------------------
def test_handles_are_cffi_pointers_checked_by_type() -> None:
    from pyisolate import _native

    broker = _core.Broker()
    try:
        client = _core.Client(broker.inproc)
        try:
            assert ffi.typeof(client._ptr) is ffi.typeof("pyi_client_t *")
            assert _native.recv_client(client._ptr) is None
            with pytest.raises(TypeError):
                _native.recv_worker(client._ptr)
            with pytest.raises(TypeError):
                _native.recv_client(int(ffi.cast("uintptr_t", client._ptr)))
            with pytest.raises(ValueError):
                _native.recv_client(ffi.cast("pyi_client_t *", 0))
        finally:
            client.close()
    finally:
        broker.close()


# -- zero-copy frames ----------------------------------------------------------------
class _Pair:
    """A broker with one worker offering "svc" (inproc) and one client."""

    def __init__(self, client_endpoint: str = "inproc") -> None:
        self.broker = _core.Broker()
        token = self.broker.allow("svc")
        self.worker = _core.Worker(self.broker.inproc, token)
        self.worker.offer("svc")
        ready = self.recv(self.worker)
        assert ready.command == _core.READY
        endpoint = self.broker.inproc if client_endpoint == "inproc" else self.broker.endpoint
        self.client = _core.Client(endpoint)

    @staticmethod
    def recv(peer, timeout: float = 10.0) -> _core.Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = peer.recv()
            if msg is not None:
                return msg
            time.sleep(0.001)
        raise AssertionError("no message came")

    def close(self) -> None:
        self.client.close()
        self.worker.close()
        self.broker.close()


def _address(buffer) -> int:
    return int(ffi.cast("uintptr_t", ffi.from_buffer(buffer)))


def _settled() -> bool:
    gc.collect()
    return lib.pyi_py_loans() == 0 and lib.pyi_py_views() == 0


def test_large_frames_are_lent_and_viewed_not_copied() -> None:
    assert _wait(_settled)
    pair = _Pair("inproc")
    try:
        data = bytearray(os.urandom(MiB))
        small = bytearray(BIG - 1)
        assert pair.client.request("svc", 1, 0, [b"head", data, small])
        # The bridge holds the large buffer (a bytearray cannot be resized
        # while exported), not the small one, which was copied.
        small.extend(b"x")
        with pytest.raises(BufferError):
            data.extend(b"x")
        assert lib.pyi_py_loans() == 1
        # Nobody read the request yet: the loan stays.
        time.sleep(0.05)
        assert lib.pyi_py_loans() == 1
        msg = pair.recv(pair.worker)
        head, view, copy = msg.frames
        assert head == b"head" and isinstance(copy, bytearray) and len(copy) == BIG - 1
        assert isinstance(view, memoryview) and view.readonly and view == data
        # inproc end to end: the worker sees the sender's own bytes.
        assert _address(view) == _address(data)
        assert lib.pyi_py_views() == 1
        del msg, head, copy
        assert lib.pyi_py_loans() == 1  # the view still uses the message
        view.release()
        assert lib.pyi_py_views() == 0
        # libzmq is done with the frame: the buffer comes back to Python.
        assert _wait(lambda: lib.pyi_py_loans() == 0)
        data.extend(b"x")
    finally:
        pair.close()
    assert _wait(_settled)


def test_large_bodies_round_trip_over_ipc() -> None:
    pair = _Pair("ipc")
    try:
        payload = os.urandom(3 * MiB + 7)
        head = msgpack.packb({"blob": payload, "n": 1})
        assert len(head) >= BIG
        assert pair.client.request("svc", 7, 0, [head, memoryview(payload)[1:]])
        req = pair.recv(pair.worker)
        assert all(isinstance(f, memoryview) for f in req.frames)
        assert msgpack.unpackb(req.frames[0]) == {"blob": payload, "n": 1}
        assert req.frames[1] == payload[1:]
        # Views can be sent on (lent in turn), and come back as views.
        pair.worker.reply(req.id, [req.frames[0], req.frames[1], b"tail"])
        del req
        rep = pair.recv(pair.client)
        assert rep.command == _core.REPLY and rep.id == 7
        assert msgpack.unpackb(rep.frames[0])["blob"] == payload
        assert hashlib.sha256(rep.frames[1]).digest() == hashlib.sha256(payload[1:]).digest()
        assert rep.frames[2] == b"tail" and isinstance(rep.frames[2], bytearray)
        with pytest.raises(TypeError):
            rep.frames[1][0] = 0  # read-only
    finally:
        pair.close()
    del rep
    assert _wait(_settled)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_repeated_large_sends_leak_nothing() -> None:
    pair = _Pair("ipc")
    try:
        payload = os.urandom(MiB)

        def once(i: int) -> None:
            assert pair.client.request("svc", i, 0, [b"h", payload])
            req = pair.recv(pair.worker)
            pair.worker.reply(req.id, [req.frames[1]])
            del req
            rep = pair.recv(pair.client)
            assert rep.id == i and len(rep.frames[0]) == MiB

        for i in range(20):  # warm-up: allocator pools, queues
            once(i)
        assert _wait(_settled)
        before = _rss()
        for i in range(20, 320):
            once(i)
        assert _wait(_settled)
        grown = _rss() - before
        assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.0f} MiB over 300 MiB sent"
    finally:
        pair.close()


def test_large_values_through_an_extension(venv_root) -> None:
    blob = os.urandom(MiB)
    text = "ü" * (MiB // 2)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            for _ in range(3):
                assert await ext.echo(blob) == blob
                assert await ext.echo(text) == text
                assert await ext.echo(bytearray(blob)) == blob
                got = await ext.echo([blob, {"t": text}])
                assert got == [blob, {"t": text}]

    run(main())
    assert _wait(_settled)
