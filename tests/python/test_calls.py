"""Calls across the boundary: values, hooks, singletons, callbacks, nesting,
concurrency, exceptions, logging of the extension's output."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

import pyisolate
from conftest import ext_config, manager, run
from shared_apis import HostBase, HostError, Relay, Store


def test_values_roundtrip(venv_root) -> None:
    np = pytest.importorskip("numpy")

    values = [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**200,
        -(3**150),
        1.5,
        float("inf"),
        "text",
        "ünï",
        b"\x00bytes",
        [1, [2, 3]],
        (1, (2, "x")),
        (),
        {1: "int key", "s": 2, (1, 2): "tuple key", None: 0},
        {1, 2, 3},
        frozenset({"a"}),
        {"nested": [(1, {2: {3}})]},
        bytearray(b"ba"),
    ]

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            for v in values:
                got = await ext.echo(v)
                expected = bytes(v) if isinstance(v, bytearray) else v
                assert got == expected and type(got) is type(expected), v
            got = await ext.echo((1, 2))
            assert isinstance(got, tuple)
            d = await ext.echo({1: "a", 2: "b"})
            assert list(d) == [1, 2]
            assert await ext.types([(1,), {1}, 2**100, b"x"]) == ["tuple", "set", "int", "bytes"]
            assert await ext.echo(kwarg_value := 7) == kwarg_value
            assert await ext.echo(value=[1, 2]) == [1, 2]
            # numpy without numpy in the extension: a clear error
            with pytest.raises(TypeError, match="numpy"):
                await ext.echo(np.arange(3))

    run(main())


def test_unsupported_type_names_type_and_position(venv_root) -> None:
    class Thing:
        pass

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            with pytest.raises(TypeError, match=r"Thing.*argument 0\[1\]\['k'\]"):
                await ext.echo([1, {"k": Thing()}])
            with pytest.raises(TypeError, match=r"keyword argument 'value'"):
                await ext.echo(value=Thing())
            # an unsendable return value comes back as TypeError too
            with pytest.raises(TypeError, match=r"builtins.object.*return value"):
                await ext.fail("unsendable")
            assert await ext.echo(1) == 1

    run(main())


def test_unsendable_answers_fail_the_call_not_hang(venv_root) -> None:
    """A value that cannot be sent back fails its call at once with
    TypeError (each call is bounded here, so a hang fails the test):
    from a sync method (run off the loop), nested in a container, as an
    exception's argument (the exception still arrives), and as what a host
    callback returns to the extension."""

    async def bounded(call):
        return await asyncio.wait_for(call, 60)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("unsendable", "probe"))
            with pytest.raises(TypeError, match=r"builtins.object.*return value"):
                await bounded(ext.sync_unsendable())
            with pytest.raises(TypeError, match=r"builtins.complex.*return value\[2\]\[3\]"):
                await bounded(ext.unsendable_in_list())
            with pytest.raises(ValueError, match="object at 0x"):
                await bounded(ext.unsendable_error())
            seen = await bounded(ext.callback_result(lambda: object()))
            assert seen[0] == "TypeError" and "builtins.object" in seen[1], seen
            assert await bounded(ext.getpid()) == ext.pid  # still serving

    run(main())


def test_hooks_order_and_stop_hook(venv_root, tmp_path) -> None:
    mark = tmp_path / "stopped"

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config(
                    "basic", env={"STOP_MARK": str(mark)}, sandbox={"writable_paths": [tmp_path]}
                )
            )
            assert await ext.hooks() == ["before_module_loaded", "on_module_loaded:basic"]
            pid = ext.pid
            await ext.stop()
            assert not ext.alive
            assert ext.exit_status == 0
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    run(main())
    assert mark.read_text() == "stopped"


def test_handle_without_await_waits_for_ready(venv_root) -> None:
    async def main() -> None:
        config = pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
        async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, config) as mgr:
            ext = mgr.load_extension(ext_config("basic"))
            assert await ext.echo("first call") == "first call"
            with pytest.raises(ValueError, match="already loaded"):
                mgr.load_extension(ext_config("basic"))
        assert not ext.alive  # async with stopped it

    run(main())


def test_sync_and_async_methods(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            got = await asyncio.gather(*(ext.sync_echo(i) for i in range(50)))
            assert got == list(range(50))

    run(main())


def test_thousand_concurrent_calls(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            got = await asyncio.gather(*(ext.echo(i) for i in range(1000)))
            assert got == list(range(1000))
            got = await asyncio.gather(*(ext.sleep(0.01 * (i % 5)) for i in range(1000)))
            assert len(got) == 1000

    run(main())


def test_exceptions_cross(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("basic"))
            with pytest.raises(ValueError, match="bad value") as info:
                await ext.fail("value")
            tb = info.value.remote_traceback
            assert "in fail" in tb and "raise ValueError" in tb
            import traceback

            text = "".join(traceback.format_exception(info.value))
            assert 'raise ValueError("bad value")' in text
            with pytest.raises(KeyError):
                await ext.fail("key")
            with pytest.raises(ZeroDivisionError):
                await ext.fail("zero")
            with pytest.raises(HostError, match="shared type"):
                await ext.fail("host")
            with pytest.raises(pyisolate.RemoteError) as rinfo:
                await ext.fail("custom")
            assert rinfo.value.remote_type == "basic.Custom"
            assert "custom failure" in str(rinfo.value)
            with pytest.raises(AttributeError):
                await ext.no_such_method()
            with pytest.raises(AttributeError):
                await ext.call_private()
            assert await ext.echo("still fine") == "still fine"

    run(main())


def test_singleton_shared_by_two_extensions(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            a = mgr.load_extension(ext_config("ext_a", "basic", apis=[Store]))
            b = mgr.load_extension(ext_config("ext_b", "basic", apis=[Store]))
            await asyncio.gather(a, b)
            assert await a.store_set("k", {"v": (1, 2)}) == {"v": (1, 2)}
            assert await b.store_get("k") == {"v": (1, 2)}
            assert Store().get("k") == {"v": (1, 2)}
            pids = await b.store_pids()
            assert pids["remote"] == os.getpid()
            assert pids["local"] == pids["me"] == b.pid
            assert pids["isinstance"] is True
            # the singleton is a named service on the broker
            stats = mgr.service_stats("api.shared_apis.Store")
            assert stats is not None and stats["requests"] >= 4 and stats["ready"]
            assert mgr.service_stats("ext.ext_a")["pid"] == a.pid
            with pytest.raises(pyisolate.PyisolateError, match="apis"):
                await a.unlisted_singleton()
            # the singleton itself passed as a value arrives as a proxy
            assert await b.use_passed_store(Store(), "k") == [True, {"v": (1, 2)}]

    run(main())


def test_callbacks_and_nesting_both_ways(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            relay = Relay()
            e1 = mgr.load_extension(
                ext_config("nest1", "basic", apis=[Relay], env={"EXT_NAME": "nest1"})
            )
            await e1
            relay.handles["nest1"] = e1
            # ext -> host singleton -> ext -> host ... 6 levels
            assert await e1.ping_pong(6) == ["nest1", "host"] * 3 + ["nest1"]

            loop = asyncio.get_running_loop()
            seen = []

            async def host_cb(depth):
                seen.append(asyncio.get_running_loop() is loop)
                return ["host"] + await e1.nested_cb(host_cb, depth - 1) if depth > 0 else ["host"]

            assert await e1.nested_cb(host_cb, 5) == ["ext", "host"] * 3
            assert seen and all(seen)

            # an extension's callable, called by the host while the call runs
            assert await e1.round_trip_callable(41) == 42

            def sync_cb(x):
                return x * 2

            assert await e1.call_back(sync_cb, 21) == 42
            # many nested calls at once
            got = await asyncio.gather(*(e1.call_back(sync_cb, i) for i in range(200)))
            assert got == [i * 2 for i in range(200)]

    run(main())


def test_extension_output_is_logged(venv_root, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyisolate")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("talker", "basic"))
            await ext.say("hello from the extension")
            await ext.stop()

    run(main())
    msgs = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("pyisolate.extension.talker", "[talker] hello from the extension") in msgs
    assert ("pyisolate.extension.talker", "[talker] to stderr: hello from the extension") in msgs


def test_extension_class_choice(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root, HostBase) as mgr:
            with pytest.raises(pyisolate.ExtensionLoadError, match="several"):
                await mgr.load_extension(ext_config("multi"))
            second = await mgr.load_extension(
                ext_config("multi2", "multi", extension_class="Second")
            )
            assert await second.which() == "second"
            plain = await mgr.load_extension(ext_config("noclass"))
            assert (await plain.hello()).startswith("hello from HostBase in ")

    run(main())


def test_in_process_extension(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("local", "basic", isolated=False, apis=[Store])
            )
            assert ext.pid is None
            info = await ext.info()
            assert info["pid"] == os.getpid()
            assert await ext.store_set("local-key", 5) == 5
            assert Store().get("local-key") == 5
            assert await ext.sync_echo(3) == 3
            with pytest.raises(ValueError):
                await ext.fail("value")
            await ext.stop()

    run(main())


def test_pickle_only_when_the_extension_allows_it(venv_root) -> None:
    import datetime
    import fractions

    import msgpack

    from pyisolate._serialize import EXT_PICKLE, Codec

    value = {"f": fractions.Fraction(1, 3), "d": datetime.date(2020, 1, 2)}

    async def main() -> None:
        async with manager(venv_root) as mgr:
            plain = await mgr.load_extension(ext_config("basic"))
            with pytest.raises(TypeError, match=r"fractions.Fraction.*argument 0\['f'\]"):
                await plain.echo(value)
            trusted = await mgr.load_extension(
                ext_config("pickler", module="basic", allow_pickle=True)
            )
            got = await trusted.echo(value)
            assert got == value and type(got["f"]) is fractions.Fraction
            assert type(got["d"]) is datetime.date
            # the plain extension still refuses them after the trusted one loaded
            with pytest.raises(TypeError, match="Fraction"):
                await plain.echo(value)

    run(main())

    # A pickle arriving where none is allowed is refused, never unpickled.
    codec = Codec(lambda obj: None, lambda *a: None)
    evil = msgpack.packb(msgpack.ExtType(EXT_PICKLE, b"cos\nsystem\n(S'true'\ntR."))
    with pytest.raises(TypeError, match="allow_pickle"):
        codec.loads(evil, [])


def test_a_call_from_another_loop_is_refused(venv_root) -> None:
    """An extension answers only the loop that loaded it: a call from a loop
    in another thread, or from a later loop in the same thread, raises a
    clear error (and the extension still serves its own loop). Last in this
    file: the in-process one leaves its module imported here."""

    async def other_loop(ext) -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await ext.echo(1)

    local = []

    async def main() -> None:
        async with manager(venv_root) as mgr:
            for isolated, name in ((True, "basic"), (False, "local")):
                ext = await mgr.load_extension(ext_config(name, "basic", isolated=isolated))
                assert await ext.echo(1) == 1
                await asyncio.to_thread(asyncio.run, other_loop(ext))
                assert await ext.echo(2) == 2
                local.append(ext)

    run(main())
    # a later loop of this thread: the one that loaded them has ended
    for ext in local:
        asyncio.run(other_loop(ext))
