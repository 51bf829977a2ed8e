"""The host side: ExtensionManager and the Extension handle.

One ExtensionManager owns one broker (a C thread) and one RPC node on the
event loop that first uses it: a pyi_client for calls to extensions and a
pyi_worker offering the service ``host`` (the manager's ProxiedSingletons
and the callables the host passes to extensions). Each isolated extension
is a process started by the broker that offers the service ``ext.<name>``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import sys
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable, Generator, Generic, Mapping, TypeVar

from . import _core, _tensors
from ._base import ExtensionBase, ProxiedSingleton, in_local_extension, singleton_key
from ._errors import (
    CallTimeout,
    ExtensionCrashed,
    ExtensionLoadError,
    ExtensionStopped,
    PyisolateError,
)
from ._rpc import BrokerError, Node, invoke
from .config import (
    ExtensionConfig,
    ExtensionManagerConfig,
    validate_dependencies,
    validate_name,
)

logger = logging.getLogger("pyisolate")


T = TypeVar("T", bound=ExtensionBase)

HOST_SERVICE = "host"
_HEARTBEAT_MS = 1000
_BOOTSTRAP = (
    "import os, sys\n"
    "sys.path[:] = [p for p in sys.path if p]\n"
    "sys.path.extend(p for p in os.environ.pop('PYI_SYS_PATH', '').split(os.pathsep) if p)\n"
    "from pyisolate._child import main\n"
    "main()\n"
)

_live_brokers: "weakref.WeakSet[_core.Broker]" = weakref.WeakSet()
_live_nodes: "weakref.WeakSet[Node]" = weakref.WeakSet()


@atexit.register
def _close_brokers() -> None:  # pragma: no cover - interpreter exit
    # A program that never called stop_all(): close the host's sockets, then
    # the brokers (which end the extension processes).
    for node in list(_live_nodes):
        try:
            node.close()
        except Exception:
            pass
    for broker in list(_live_brokers):
        try:
            broker.close()
        except Exception:
            pass


def _import_root(module: ModuleType) -> str | None:
    """The sys.path entry a module was imported from."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    root = Path(path).resolve().parent
    if Path(path).name == "__init__.py":
        root = root.parent
    for _ in range(module.__name__.count(".")):
        root = root.parent
    return str(root)


class ExtensionManager(Generic[T]):
    """Loads extensions and stops them.

    ``ExtensionManager(ExtensionBase, ExtensionManagerConfig(venv_root_path=...))``.
    The first ``load_extension`` binds the manager to the running event loop.
    ``async with ExtensionManager(...) as manager:`` stops every extension
    on exit; ``await manager.stop_all()`` does so explicitly.
    """

    def __init__(self, extension_type: type[T] = ExtensionBase,  # type: ignore[assignment]
                 config: ExtensionManagerConfig | Mapping[str, Any] | None = None) -> None:
        if not (isinstance(extension_type, type) and issubclass(extension_type, ExtensionBase)):
            raise TypeError("extension_type must be ExtensionBase or a subclass of it")
        self.extension_type = extension_type
        self.config = ExtensionManagerConfig.from_any(config or {})
        self.venv_root = Path(os.path.abspath(os.fspath(self.config.venv_root_path)))
        self._extensions: dict[str, Extension[T]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: _core.Broker | None = None
        self._node: Node | None = None
        self._host_ready: asyncio.Future[None] | None = None
        self._event_fd = -1
        self._by_pid: dict[int, Extension[T]] = {}
        self._closed = False
        self._host_token = ""
        self._api_offers: dict[str, asyncio.Task[None]] = {}
        self._remote_endpoint: str | None = None

    # -- public API -----------------------------------------------------------
    def load_extension(self, config: ExtensionConfig | Mapping[str, Any]) -> "Extension[T]":
        """Start loading an extension and return its handle at once.

        ``await manager.load_extension(cfg)`` waits until it is ready; a
        handle used without awaiting waits for readiness on its first call.
        Raises ValueError at once for a bad name or dependency string."""
        cfg = ExtensionConfig.from_any(config)
        validate_name(cfg.name)
        if cfg.remote and not cfg.isolated:
            raise ValueError(f"extension {cfg.name!r}: a remote extension is isolated")
        if not cfg.module_path and not cfg.remote:
            raise ValueError(f"extension {cfg.name!r}: module_path is required")
        deps = validate_dependencies(list(cfg.dependencies), Path.cwd())
        for api in cfg.apis:
            if not (isinstance(api, type) and issubclass(api, ProxiedSingleton)):
                raise TypeError(f"extension {cfg.name!r}: apis must be ProxiedSingleton "
                                f"subclasses, got {api!r}")
        if cfg.isolated:
            for cls in [self.extension_type, *cfg.apis]:
                if cls.__module__ == "__main__":
                    raise ValueError(f"extension {cfg.name!r}: {cls.__qualname__} is defined "
                                     "in __main__, which extensions cannot import: define it "
                                     "in a module of its own")
        elif cfg.dependencies:
            logger.warning("[%s] isolated=False: dependencies are not installed; the "
                           "extension uses the host's packages", cfg.name)
        if cfg.remote and (cfg.dependencies or cfg.share_torch or cfg.env):
            logger.warning("[%s] remote: dependencies, share_torch and env do not apply (the "
                           "remote process brings its own environment)", cfg.name)
        if self._closed:
            raise PyisolateError("this ExtensionManager was stopped")
        loop = self._bind_loop()
        for api in cfg.apis:
            self._serve_api(api)
        old = self._extensions.get(cfg.name)
        if old is not None and not old._finished:
            if not old._lost:
                raise ValueError(f"an extension named {cfg.name!r} is already loaded")
            old._kill()  # lost but not exited: make room for the new one
        ext: Extension[T] = Extension(self, cfg, deps)
        if cfg.remote:
            ext.ticket = self._remote_ticket(ext)
        self._extensions[cfg.name] = ext
        ext._start_task = loop.create_task(ext._start(), name=f"pyisolate-load-{cfg.name}")
        ext._start_task.add_done_callback(ext._start_done)
        return ext

    def get_extension(self, name: str) -> "Extension[T]":
        return self._extensions[name]

    @property
    def extensions(self) -> dict[str, "Extension[T]"]:
        return dict(self._extensions)

    async def stop_all(self) -> None:
        """Stop every extension, then the broker."""
        exts = list(self._extensions.values())
        if exts:
            await asyncio.gather(*(e.stop() for e in exts), return_exceptions=True)
        await self._shutdown()

    async def __aenter__(self) -> "ExtensionManager[T]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    def broker_stats(self) -> dict[str, int]:
        """The broker's counters (see pyi_broker_stats)."""
        return self._broker.stats() if self._broker is not None else {}

    def service_stats(self, service: str) -> dict[str, int] | None:
        """The broker's counters for one service (``ext.<name>``, ``host`` or
        ``api.<module>.<qualname>``), or None if it never heard of it."""
        return self._broker.service_stats(service) if self._broker is not None else None

    # -- host runtime ---------------------------------------------------------
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("load_extension needs a running event loop: call it from "
                               "async code, or use pyisolate.SyncExtensionManager") from None
        if self._loop is None:
            self._loop = loop
            self.venv_root.mkdir(parents=True, exist_ok=True)
            self._broker = _core.Broker()
            _live_brokers.add(self._broker)
            beats = max(2, int(self.config.heartbeat_timeout * 1000 / _HEARTBEAT_MS + 0.5))
            self._broker.set(_core.lib.PYI_OPT_HEARTBEAT_MS, _HEARTBEAT_MS)
            self._broker.set(_core.lib.PYI_OPT_LIVENESS, beats)
            logger.debug("broker started at %s", self._broker.endpoint)
            self._node = Node(loop, self._broker.inproc, "host")
            _live_nodes.add(self._node)
            self._node.ops["load_error"] = self._op_load_error
            self._node.on_lost = self._on_host_worker_lost
            self._host_token = self._broker.allow(HOST_SERVICE)
            self._host_ready = loop.create_task(  # type: ignore[assignment]
                self._node.serve(HOST_SERVICE, self._host_token))
            self._event_fd = self._broker.event_fd()
            loop.add_reader(self._event_fd, self._drain_events)
            loop.call_soon(self._drain_events)
        elif self._loop is not loop:
            raise RuntimeError("this ExtensionManager is bound to another event loop")
        return loop

    def _remote_ticket(self, ext: "Extension[T]") -> str:
        """Bind the CURVE endpoint (once), admit a new key pair and grant a
        token for the extension's service: the ticket its process needs."""
        from .remote import make_ticket

        broker = self._broker
        assert broker is not None
        if self._remote_endpoint is None:
            bound = broker.bind_curve(self.config.remote_endpoint)
            host, _, port = bound[len("tcp://"):].rpartition(":")
            if self.config.remote_host:
                host = self.config.remote_host
            elif host in ("0.0.0.0", "*", "[::]", "::"):
                host = socket.getfqdn()
            self._remote_endpoint = f"tcp://{host}:{port}"
            logger.info("remote extensions connect to %s (CURVE)", self._remote_endpoint)
        public, secret = _core.curve_keypair()
        broker.allow_key(public)
        token = broker.allow(ext._service)
        return make_ticket({"endpoint": self._remote_endpoint, "server_key": broker.curve_key,
                            "public_key": public, "secret_key": secret, "token": token,
                            "service": ext._service,
                            "config": ext._child_config(ext._api_roots())})

    def _serve_api(self, api: type[ProxiedSingleton]) -> None:
        """Offer the singleton as the service ``api.<module>.<qualname>``."""
        key = singleton_key(api)
        node = self._node
        assert node is not None and self._loop is not None
        if node.singletons.get(key) is api:
            return
        if key in node.singletons:
            raise ValueError(f"two ProxiedSingleton classes are named {key!r}")
        node.singletons[key] = api

        async def offer() -> None:
            assert self._broker is not None and self._host_ready is not None
            await self._host_ready
            self._broker.allow("api." + key, self._host_token)
            await node.offer("api." + key)

        self._api_offers[key] = self._loop.create_task(offer())

    def _on_host_worker_lost(self, why: str) -> None:
        if self._node is not None and not self._node.closed and not self._closed:
            logger.warning("host service lost (%s): offering it again", why)
            self._node.restart_worker()

    def _drain_events(self) -> None:
        broker = self._broker
        while broker is not None and not broker.closed:
            ev = broker.next_event(0)
            if ev is None:
                break
            logger.debug("broker event %s", ev)
            if ev.type == _core.EVENT_EXIT:
                _tensors.collect_cuda()  # what the dead process held is free
            ext = self._by_pid.get(ev.pid) if ev.pid else None
            if ext is None and ev.service.startswith("ext."):
                cand = self._extensions.get(ev.service[4:])
                if cand is not None and (not ev.pid or cand.pid in (None, ev.pid)):
                    ext = cand
            if ext is None:
                continue
            if ev.type == _core.EVENT_READY:
                ext._on_ready()
            elif ev.type == _core.EVENT_EXIT:
                self._by_pid.pop(ev.pid, None)
                ext._on_exit(ev.status)
            elif ev.type == _core.EVENT_LOST:
                ext._on_lost(ev.text)
            elif ev.type == _core.EVENT_REFUSED:
                ext._fail_load(ExtensionLoadError(ext.name, f"the broker refused its service: "
                                                  f"{ev.text}"))

    async def _op_load_error(self, target: str, method: str, args: list[Any],
                             kwargs: dict[str, Any]) -> None:
        ext = self._extensions.get(target)
        if ext is not None and args:
            data = args[0]
            ext._fail_load(ExtensionLoadError(ext.name, f"{data.get('qualname')}: "
                                              f"{data.get('message')}",
                                              str(data.get("traceback", ""))))

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is None:
            return
        if self._host_ready is not None and not self._host_ready.done():
            self._host_ready.cancel()
        for task in self._api_offers.values():
            if not task.done():
                task.cancel()
        if self._node is not None:
            self._node.close()
        if self._event_fd >= 0:
            try:
                loop.remove_reader(self._event_fd)
            except Exception:
                pass
        broker, self._broker = self._broker, None
        if broker is not None:
            # Destroying waits up to the grace period for children: off the loop
            # (unless the interpreter is exiting and executors are gone).
            try:
                await loop.run_in_executor(None, broker.close)
            except RuntimeError:
                broker.close()
            _live_brokers.discard(broker)
        for ext in self._extensions.values():
            ext._close_pipes()

    def _register_pid(self, pid: int, ext: "Extension[T]") -> None:
        self._by_pid[pid] = ext


class _Method:
    __slots__ = ("_ext", "_name", "_timeout")

    def __init__(self, ext: "Extension[Any]", name: str, timeout: float | None) -> None:
        self._ext = ext
        self._name = name
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._ext._call(self._name, args, kwargs, self._timeout)

    def __repr__(self) -> str:
        return f"<method {self._name} of extension {self._ext.name!r}>"


class _TimeoutView:
    def __init__(self, ext: "Extension[Any]", timeout: float | None) -> None:
        self._ext = ext
        self._timeout = timeout

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self._ext, name, self._timeout)


class Extension(Generic[T]):
    """The host's handle to one extension.

    ``await ext.method(*args, **kwargs)`` runs ``method`` in the extension
    (the handle's own names, ``name config pid alive exit_status remote stop
    ticket wait_ready with_timeout``, are reached through ``ext.remote.<name>``).
    ``await ext`` waits until it is loaded. ``ext.with_timeout(s).method()``
    gives one call a deadline (CallTimeout past it). ``await ext.stop()``
    runs the extension's ``stop()`` hook and ends its process.
    """

    def __init__(self, manager: ExtensionManager[T], config: ExtensionConfig,
                 deps: list[str]) -> None:
        self.name = config.name
        self.config = config
        self._manager = manager
        self._deps = deps
        self._service = f"ext.{config.name}"
        loop = manager._loop
        assert loop is not None
        self._loop = loop
        self._ready: asyncio.Future[None] = loop.create_future()
        self._exited: asyncio.Future[int | None] = loop.create_future()
        self._start_task: asyncio.Task[None] | None = None
        self._is_ready = False
        self._pid: int | None = None
        self._exit_status: int | None = None
        self._lost: str = ""
        self._finished = False
        self._stopping = False
        self._pipes: dict[int, tuple[str, bytearray]] = {}
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._local: Any = None  # the instance, for isolated=False
        self._out_logger = logging.getLogger(f"pyisolate.extension.{config.name}")
        t = config.timeout if config.timeout is not None else manager.config.default_timeout
        self._timeout = t
        # For ExtensionConfig(remote=True): what its process is started with
        # (python -m pyisolate.remote TICKET MODULE_PATH). A secret.
        self.ticket: str | None = None

    # -- public -----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The extension's process id (None in-process or before it started)."""
        return self._pid

    @property
    def alive(self) -> bool:
        return not self._finished

    @property
    def exit_status(self) -> int | None:
        return self._exit_status

    def __await__(self) -> Generator[Any, None, "Extension[T]"]:
        return self.wait_ready().__await__()

    async def wait_ready(self) -> "Extension[T]":
        """Wait until the extension is loaded; raise why it could not be."""
        st = self._start_task
        assert st is not None
        try:
            await asyncio.shield(st)
        except asyncio.CancelledError:
            if st.cancelled():  # stop() cancelled the load, not our caller
                raise ExtensionStopped(self.name) from None
            raise
        return self

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name, self._timeout)

    @property
    def remote(self) -> Any:
        """The extension's methods, also those whose names this handle uses
        itself (``await ext.remote.stop()`` calls a method named stop)."""
        return _TimeoutView(self, self._timeout)

    def with_timeout(self, seconds: float | None) -> Any:
        """A view of this handle whose calls have a deadline of ``seconds``."""
        return _TimeoutView(self, seconds)

    def __repr__(self) -> str:
        state = "ready" if self._is_ready else ("finished" if self._finished else "loading")
        return f"<Extension {self.name!r} pid={self._pid} {state}>"

    async def stop(self) -> None:
        """Run the extension's stop() hook, then end its process (killing it if
        it does not exit within the manager's stop_timeout)."""
        if self._stopping:
            await asyncio.shield(self._exited) if self._pid else None
            return
        self._stopping = True
        st = self._start_task
        if st is not None and not st.done():
            st.cancel()
            try:
                await st
            except BaseException:
                pass
        if not self.config.isolated:
            try:
                if self._local is not None:
                    await self._run_local(self._local.stop, (), {})
            finally:
                self._finished = True
            return
        if self.config.remote:
            await self._stop_remote()
            return
        if self._pid is None or self._exited.done():
            self._finished = True
            return
        node = self._manager._node
        grace = self._manager.config.stop_timeout
        if self._is_ready and node is not None and not node.closed:
            try:
                await node.call(self._service, "", "", (), {}, op="stop", timeout=grace)
            except Exception as exc:  # the process may already be gone
                logger.debug("[%s] stop request: %s", self.name, exc)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), grace)
        except asyncio.TimeoutError:
            logger.warning("[%s] did not exit within %.1fs: killing it", self.name, grace)
            self._kill()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), 5.0)
            except asyncio.TimeoutError:
                pass
        self._drain_pipes()  # its last words reach the log before stop() returns
        self._finished = True

    async def _stop_remote(self) -> None:
        node = self._manager._node
        grace = self._manager.config.stop_timeout
        if (self._is_ready and not self._exited.done() and node is not None
                and not node.closed):
            try:
                await node.call(self._service, "", "", (), {}, op="stop", timeout=grace)
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
            except Exception as exc:  # gone already, or it does not answer
                logger.debug("[%s] stop request: %s", self.name, exc)
        self._finished = True

    # -- calls --------------------------------------------------------------------
    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                    timeout: float | None) -> Any:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(f"extension {self.name!r} belongs to another event loop: call it "
                               "from the loop that loaded it (or use SyncExtensionManager)")
        if self._stopping:
            raise ExtensionStopped(self.name)
        if not self._is_ready:
            await self.wait_ready()
        if not self.config.isolated:
            fn = getattr(self._local, method)
            if timeout:
                try:
                    return await asyncio.wait_for(self._run_local(fn, args, kwargs), timeout)
                except asyncio.TimeoutError:
                    raise CallTimeout(f"call {self.name}.{method} timed out after {timeout}s") \
                        from None
            return await self._run_local(fn, args, kwargs)
        if self._exited.done() or self._lost:
            raise ExtensionCrashed(self.name, self._exit_status, self._lost)
        node = self._manager._node
        if node is None or node.closed:
            raise ExtensionStopped(self.name)
        try:
            return await node.call(self._service, "", method, args, kwargs, timeout=timeout)
        except BrokerError as exc:
            if self._stopping:
                raise ExtensionStopped(self.name) from None
            if exc.code in (_core.ERR_WORKER_LOST, _core.ERR_UNKNOWN_SERVICE):
                status = await self._wait_exit(2.0)
                if self._stopping:
                    raise ExtensionStopped(self.name) from None
                raise ExtensionCrashed(self.name, status, exc.text) from None
            if exc.code == _core.ERR_SHUTDOWN:
                raise ExtensionStopped(self.name) from None
            raise

    async def _run_local(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        token = in_local_extension.set(True)
        try:
            return await invoke(fn, list(args), dict(kwargs), offload_sync=True)
        finally:
            in_local_extension.reset(token)

    async def _wait_exit(self, seconds: float) -> int | None:
        if not self._exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), seconds)
            except asyncio.TimeoutError:
                pass
        return self._exit_status

    # -- loading ------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            path = os.path.abspath(os.fspath(self.config.module_path))
            if self.config.remote:
                await self._start_remote()
            elif not os.path.exists(path):
                raise ExtensionLoadError(self.name, f"module path {path} does not exist")
            elif self.config.isolated:
                await self._start_process()
            else:
                await self._start_local()
            self._is_ready = True
            logger.info("[%s] ready%s", self.name, f" (pid {self._pid})" if self._pid else "")
        except BaseException:
            if self._pid is not None and not self._exited.done():
                self._kill()
            self._finished = True  # the name may be loaded again at once
            raise

    def _start_done(self, task: "asyncio.Task[None]") -> None:
        # A handle nobody awaits must not end in "exception never retrieved":
        # the failure is logged here and raised again by every call.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("[%s] failed to load: %s", self.name, exc)

    async def _start_local(self) -> None:
        token = in_local_extension.set(True)
        try:
            module = _import_extension_module(self.config)
            cls = _pick_class(module, self.config, self._manager.extension_type)
            inst = cls()
            await invoke(inst.before_module_loaded, [], {}, False)
            await invoke(inst.on_module_loaded, [module], {}, False)
            self._local = inst
        except Exception as exc:
            import traceback

            raise ExtensionLoadError(self.name, f"{type(exc).__qualname__}: {exc}",
                                     traceback.format_exc()) from exc
        finally:
            in_local_extension.reset(token)

    async def _start_process(self) -> None:
        from . import _venv

        mgr = self._manager
        assert mgr._broker is not None and mgr._host_ready is not None
        deps = self._deps
        if self.config.share_torch:
            kept = [d for d in deps
                    if re.split(r"[\s\[<>=!~;@(]", d, maxsplit=1)[0].lower() != "torch"]
            if len(kept) != len(deps):
                logger.info("[%s] share_torch: using the host's torch instead of installing it",
                            self.name)
            deps = kept
        venv = await _venv.ensure_venv(self.name, mgr.venv_root, deps, self.config.share_torch)
        loop = asyncio.get_running_loop()
        rt = await loop.run_in_executor(None, _venv.runtime_dir, mgr.venv_root)
        await mgr._host_ready
        if mgr._node is not None:
            if self.config.allow_pickle:
                mgr._node.pickle_services.add(self._service)
            else:
                mgr._node.pickle_services.discard(self._service)
        for api in self.config.apis:
            await asyncio.shield(mgr._api_offers[singleton_key(api)])
        paths = [str(rt)]
        if self.config.share_torch:
            paths += _venv.host_site_packages()
        child_cfg = self._child_config(self._api_roots())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "PYI_", "VIRTUAL_ENV", "CONDA_"))}
        env.update({str(k): str(v) for k, v in self.config.env.items()})
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYI_SYS_PATH"] = os.pathsep.join(paths)
        env["PYI_CONFIG"] = json.dumps(child_cfg)
        env["PYTHONUNBUFFERED"] = "1"
        argv = [str(venv / "bin" / "python"), "-I", "-u", "-c", _BOOTSTRAP]
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = mgr._broker.spawn(self._service, argv, env, out_w, err_w)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self._pid = pid
        mgr._register_pid(pid, self)
        logger.info("[%s] started process %d", self.name, pid)
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            self._pipes[fd] = (stream, bytearray())
            loop.add_reader(fd, self._on_output, fd)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), mgr.config.start_timeout)
        except asyncio.TimeoutError:
            raise ExtensionLoadError(self.name, f"not ready after "
                                     f"{mgr.config.start_timeout}s") from None

    def _api_roots(self) -> list[str]:
        """Where the extension finds the host's API modules (shared.py and
        the like): their import roots, never the host's site-packages, and
        the host program's own directory (as a multiprocessing child would
        have it)."""
        from . import _venv

        extra: list[str] = []
        host_sites = tuple(_venv.host_site_packages())
        for cls in [self._manager.extension_type, *self.config.apis]:
            if cls.__module__ == "pyisolate" or cls.__module__.startswith("pyisolate."):
                continue
            mod = sys.modules.get(cls.__module__)
            root = _import_root(mod) if mod is not None else None
            if root is None or root in extra:
                continue
            if root.startswith(host_sites):
                logger.warning("[%s] %s comes from the host's site-packages, which the "
                               "extension does not see: add its package to the extension's "
                               "dependencies", self.name, cls.__qualname__)
                continue
            extra.append(root)
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file:
            main_dir = os.path.dirname(os.path.abspath(main_file))
            if main_dir not in extra and not main_dir.startswith(host_sites):
                extra.append(main_dir)
        return extra

    def _child_config(self, paths: list[str]) -> dict[str, Any]:
        """What the extension's process is told (pyisolate._child)."""
        mgr = self._manager
        module_path = (os.path.abspath(os.fspath(self.config.module_path))
                       if self.config.module_path else "")
        return {
            "name": self.name,
            "module_path": module_path,
            "extension_class": self.config.extension_class,
            "base": [mgr.extension_type.__module__, mgr.extension_type.__qualname__],
            "apis": [singleton_key(a) for a in self.config.apis],
            "host_service": HOST_SERVICE,
            "allow_pickle": bool(self.config.allow_pickle),
            "paths": paths,
        }

    async def _start_remote(self) -> None:
        """Wait for the remote process (started with the ticket) to offer the
        extension's service."""
        mgr = self._manager
        assert mgr._host_ready is not None
        await mgr._host_ready
        if mgr._node is not None:
            if self.config.allow_pickle:
                mgr._node.pickle_services.add(self._service)
            else:
                mgr._node.pickle_services.discard(self._service)
        for api in self.config.apis:
            await asyncio.shield(mgr._api_offers[singleton_key(api)])
        logger.info("[%s] waiting for its remote process: python -m pyisolate.remote "
                    "<ext.ticket> <module path>", self.name)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), mgr.config.start_timeout)
        except asyncio.TimeoutError:
            raise ExtensionLoadError(self.name, f"its remote process did not connect within "
                                     f"{mgr.config.start_timeout}s (start it with: python -m "
                                     f"pyisolate.remote <ticket> <module path>)") from None

    # -- events from the broker -------------------------------------------------
    def _on_ready(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def _fail_load(self, exc: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
            # Nobody may await it (a handle never used): don't warn about that.
            self._ready.exception()

    def _on_lost(self, text: str) -> None:
        if self.config.remote:
            # No process to watch: losing its connection is its end.
            self._finished = True
            if not self._exited.done():
                self._exited.set_result(None)
        if self._stopping:
            return
        self._lost = text or "the broker lost the extension"
        logger.warning("[%s] lost: %s", self.name, self._lost)

    def _on_exit(self, status: int) -> None:
        self._exit_status = status
        self._finished = True
        if not self._exited.done():
            self._exited.set_result(status)
        if not self._stopping:
            level = logging.WARNING if status != 0 else logging.INFO
            logger.log(level, "[%s] process %s exited with status %s", self.name, self._pid,
                       status)
        if not self._ready.done():
            # Let the pipes deliver the last lines before reporting.
            self._loop.call_later(0.05, self._fail_exit, status)

    def _fail_exit(self, status: int) -> None:
        self._drain_pipes()
        tail = "\n".join(self._stderr_tail)
        what = f"its process exited with status {status} before it was ready"
        if status < 0:
            what = f"its process was killed by signal {-status} before it was ready"
        self._fail_load(ExtensionLoadError(self.name, what, tail))

    def _kill(self) -> None:
        if self._pid is not None and not self._exited.done():
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- output -----------------------------------------------------------------
    def _on_output(self, fd: int) -> None:
        self._read_pipe(fd)

    def _read_pipe(self, fd: int) -> bool:
        """Read what pipe fd holds once and log its whole lines; False when
        there is nothing more to read now (would block, or closed)."""
        entry = self._pipes.get(fd)
        if entry is None:
            return False
        stream, buf = entry
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if buf:
                self._log_line(stream, bytes(buf))
            self._close_pipe(fd)
            return False
        buf += data
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest
        for line in lines:
            self._log_line(stream, line)
        return True

    def _log_line(self, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if stream == "stderr":
            self._stderr_tail.append(line)
            self._out_logger.warning("[%s] %s", self.name, line)
        else:
            self._out_logger.info("[%s] %s", self.name, line)

    def _drain_pipes(self) -> None:
        """Log whatever the pipes hold now (without waiting for more)."""
        for fd in list(self._pipes):
            for _ in range(256):
                if not self._read_pipe(fd):
                    break

    def _close_pipe(self, fd: int) -> None:
        if self._pipes.pop(fd, None) is not None:
            try:
                self._loop.remove_reader(fd)
            except Exception:
                pass
            os.close(fd)

    def _close_pipes(self) -> None:
        self._drain_pipes()
        for fd in list(self._pipes):
            stream, buf = self._pipes[fd]
            if buf:
                self._log_line(stream, bytes(buf))
            self._close_pipe(fd)


def _import_extension_module(config: ExtensionConfig) -> ModuleType:
    """Import the extension's module from its directory or file."""
    path = Path(os.path.abspath(os.fspath(config.module_path)))
    if path.is_dir():
        init = path / "__init__.py"
        if not init.exists():
            raise ImportError(f"{path} is not a package (no __init__.py)")
        name = path.name
        spec = importlib.util.spec_from_file_location(name, init,
                                                      submodule_search_locations=[str(path)])
    elif path.is_file():
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        raise ImportError(f"extension module path {path} does not exist")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _pick_class(module: ModuleType, config: ExtensionConfig, base: type) -> type:
    """The ExtensionBase subclass defined in the module (the one the config
    names, if several), else the manager's extension type."""
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, ExtensionBase)
             and obj is not ExtensionBase and obj is not base
             and (obj.__module__ == module.__name__
                  or obj.__module__.startswith(module.__name__ + "."))]
    if config.extension_class:
        for obj in found:
            if obj.__name__ == config.extension_class or obj.__qualname__ == config.extension_class:
                return obj
        named = getattr(module, config.extension_class, None)
        if isinstance(named, type) and issubclass(named, ExtensionBase):
            return named
        raise ImportError(f"the module defines no ExtensionBase subclass named "
                          f"{config.extension_class!r}")
    if len(found) > 1:
        names = sorted(o.__qualname__ for o in found)
        raise ImportError(f"the module defines several ExtensionBase subclasses {names}: "
                          "name one with ExtensionConfig(extension_class=...)")
    if found:
        return found[0]
    return base
