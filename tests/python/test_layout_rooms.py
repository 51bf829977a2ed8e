"""The package's rooms keep their promises:

- one table turns every broker error code (PYI_ERR_*) into an exception,
  by callee, and the RPC node, the handle and the extension process use it;
- the launchers' state machine follows the transitions State documents.
(That the package's modules import each other in one direction only is
tests/check_layout.py's, run by make test.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgpack
import pytest

import pyisolate
from conftest import EXTENSIONS, run
from pyisolate import _codes, _core, _launch
from pyisolate._codes import Callee, call_error, exception_type, reply_error
from pyisolate._errors import describe_exception
from pyisolate._launch import State

PACKAGE = Path(pyisolate.__file__).resolve().parent


def _codes_in_lib() -> dict[str, int]:
    return {n: getattr(_core.lib, n) for n in dir(_core.lib) if n.startswith("PYI_ERR_")}


def test_the_table_maps_every_error_code() -> None:
    codes = _codes_in_lib()
    assert codes, "no PYI_ERR_* codes in the cffi module"
    assert sorted(_codes.EXCEPTIONS) == sorted(codes.values()), codes
    for row in _codes.EXCEPTIONS.values():
        assert len(row) == len(Callee)
        assert all(issubclass(kind, pyisolate.PyisolateError) for kind in row)
    for callee in Callee:
        assert exception_type(_core.lib.PYI_ERR_TIMEOUT, callee) is pyisolate.CallTimeout
        assert exception_type(12345, callee) is pyisolate.BrokerError


def test_the_table_by_callee() -> None:
    lib = _core.lib
    crashed = call_error(lib.PYI_ERR_WORKER_LOST, "gone", Callee.EXTENSION, "e", exit_status=-9)
    assert isinstance(crashed, pyisolate.ExtensionCrashed)
    assert crashed.extension == "e" and crashed.signal == 9 and "gone" in str(crashed)
    stopped = call_error(lib.PYI_ERR_SHUTDOWN, "", Callee.EXTENSION, "e")
    assert isinstance(stopped, pyisolate.ExtensionStopped) and stopped.extension == "e"
    missing = call_error(lib.PYI_ERR_UNKNOWN_SERVICE, "", Callee.SINGLETON, "mod.API")
    assert type(missing) is pyisolate.PyisolateError and "apis" in str(missing)
    for code in (lib.PYI_ERR_WORKER_LOST, lib.PYI_ERR_SHUTDOWN, lib.PYI_ERR_UNKNOWN_SERVICE):
        other = call_error(code, "why", Callee.OTHER, "ext.e")
        assert type(other) is pyisolate.BrokerError and other.code == code
        assert str(other) == f"{_core.error_name(code)}: why"


def test_error_replies() -> None:
    lib = _core.lib
    timeout = reply_error(
        _core.Message(_core.ERROR, 1, "", lib.PYI_ERR_TIMEOUT, "late", 0), "ext.e", "m", 0.5
    )
    assert isinstance(timeout, pyisolate.CallTimeout) and isinstance(timeout, TimeoutError)
    assert str(timeout) == "call to m on 'ext.e' timed out after 0.5s"
    body = msgpack.packb(describe_exception(KeyError("k")), use_bin_type=True)
    own = reply_error(
        _core.Message(_core.ERROR, 1, "", lib.PYI_ERR_APPLICATION, "KeyError", 0, [body]),
        "ext.e",
        "m",
        None,
    )
    assert type(own) is KeyError and "KeyError" in own.remote_traceback
    bare = reply_error(
        _core.Message(_core.ERROR, 1, "", lib.PYI_ERR_APPLICATION, "t", 0), "ext.e", "m", None
    )
    assert type(bare) is pyisolate.BrokerError


class _StubHost:
    """What a served launcher needs from a Host before it starts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def admit_remote(self, service: str) -> dict[str, str]:
        return dict.fromkeys(
            ("endpoint", "server_key", "public_key", "secret_key", "token"), "x"
        ) | {"service": service}


def _config(name: str, module: str = "basic", **kw: object) -> pyisolate.ExtensionConfig:
    return pyisolate.ExtensionConfig(name=name, module_path=str(EXTENSIONS / module), **kw)


def test_state_transitions_of_a_process() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        settings = pyisolate.ExtensionManagerConfig()
        host = _StubHost(loop)
        p = _launch.Process(_config("p"), pyisolate.ExtensionBase, host, settings, [], PACKAGE)
        assert p.state is State.LOADING and p.alive
        p.on_lost("silent")
        assert p.state is State.LOST and p.alive and p.reason == "silent"
        p.on_exit(-9)
        assert p.state is State.ENDED and not p.alive and p.exit_status == -9
        p.on_lost("late")  # an ended one stays ended
        assert p.state is State.ENDED

        q = _launch.Process(_config("q"), pyisolate.ExtensionBase, host, settings, [], PACKAGE)
        q.state = State.STOPPING
        q.on_lost("silent")  # lost while stopping: nothing to report
        assert q.state is State.STOPPING and q.reason == ""
        q.on_exit(0)
        assert q.state is State.STOPPED and not q.alive

        r = _launch.Remote(_config("r", remote=True), pyisolate.ExtensionBase, host, settings)
        assert r.ticket and r.ticket.startswith("pyi1.")
        r.on_lost("gone")  # a remote one: lost is its end
        assert r.state is State.ENDED and not r.alive and r.reason == "gone"

    run(main())


def test_state_transitions_in_process() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ok = _launch.InProcess(_config("ok", isolated=False), pyisolate.ExtensionBase, loop)
        ok.start()
        assert ok.state is State.LOADING
        await ok.wait_ready()
        assert ok.state is State.READY
        assert await ok.call("echo", (1,), {}, None) == 1
        await ok.stop()
        assert ok.state is State.STOPPED and not ok.alive
        with pytest.raises(pyisolate.ExtensionStopped):
            await ok.call("echo", (1,), {}, None)

        bad = _launch.InProcess(
            _config("bad", "broken", isolated=False), pyisolate.ExtensionBase, loop
        )
        bad.start()
        with pytest.raises(pyisolate.ExtensionLoadError):
            await bad.wait_ready()
        assert bad.state is State.ENDED and not bad.alive
        with pytest.raises(pyisolate.ExtensionLoadError):  # calls say why
            await bad.call("echo", (1,), {}, None)

        early = _launch.InProcess(_config("early", isolated=False), pyisolate.ExtensionBase, loop)
        early.start()
        await early.stop()  # while loading
        assert early.state is State.STOPPED
        with pytest.raises(pyisolate.ExtensionStopped):
            await early.wait_ready()

    run(main())


def test_the_handle_stays_thin() -> None:
    # Every public name of the handle shadows extension methods of that name.
    names = {n for n in vars(pyisolate.Extension) if not n.startswith("_")}
    assert names == {
        "pid",
        "alive",
        "exit_status",
        "wait_ready",
        "remote",
        "with_timeout",
        "stop",
        "reload",
        "register_event_handler",
        "stats",
        "profile",
    }
    assert isinstance(vars(pyisolate.Extension)["pid"], property)
