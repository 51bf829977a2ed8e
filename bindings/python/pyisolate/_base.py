"""ExtensionBase, ProxiedSingleton and local_execution."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Set while code of an in-process (isolated=False) extension runs, so that
# ProxiedSingleton() gives it the same awaitable proxy an isolated one gets.
in_local_extension: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pyisolate_in_local_extension", default=False
)

# Set in an extension process: an async function (singleton key, method,
# args, kwargs) -> result that calls the host, and the host's service name.
_child_caller: Callable[[str, str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]] | None = None
_child_host_service: str = ""


def set_child_runtime(caller: Callable[..., Awaitable[Any]], host_service: str) -> None:
    global _child_caller, _child_host_service
    _child_caller = caller
    _child_host_service = host_service


# Set in an extension process: emit(name, payload) queues an event for the
# host (from any thread; never blocks). An in-process extension's instance
# has its own, ``_pyi_emit`` (bind_emitter, by the manager once it is loaded).
_child_emitter: Callable[[str, Any], None] | None = None


def set_child_emitter(emit: Callable[[str, Any], None] | None) -> None:
    global _child_emitter
    _child_emitter = emit


def bind_emitter(instance: Any, emit: Callable[[str, Any], None]) -> None:
    """Give an in-process extension's instance its own emit (its events go
    to its handlers, not to a process's)."""
    if hasattr(instance, "__dict__"):
        instance.__dict__["_pyi_emit"] = emit


def in_extension_process() -> bool:
    """True inside an isolated extension's process."""
    return _child_caller is not None


class ExtensionBase:
    """Base class of extensions.

    Subclass it in the extension's module; its public methods, ``async def``
    or plain ``def``, are what the host calls (a plain one runs in a worker
    thread, so it does not block the extension's event loop). The hooks may
    be sync or async:

    - ``before_module_loaded()``: runs first, after the instance is made;
    - ``on_module_loaded(module)``: gets the extension's imported module;
    - ``stop()``: runs when the host stops the extension.
    """

    def before_module_loaded(self) -> Any:
        """Called in the extension's process once its instance is made,
        before ``on_module_loaded`` (sync or async)."""
        return None

    def on_module_loaded(self, module: Any) -> Any:
        """Called with the imported module once it is loaded (sync or
        async); the place to keep what the extension needs of it."""
        return None

    def stop(self) -> Any:
        """Called when the host stops the extension, before its process
        ends (sync or async)."""
        return None

    def emit_event(self, name: str, payload: Any = None) -> None:
        """Send the event ``name`` with ``payload`` (any value calls may
        carry) to the host's handlers (``ext.register_event_handler``).

        Fire-and-forget: callable from async code and from plain methods
        (worker threads) alike, it never blocks and never raises for the
        host's handlers; the events of one extension reach them in the order
        they were emitted. Outside a loaded extension it does nothing."""
        if type(name) is not str:
            raise TypeError(f"an event's name is a str, not {type(name).__qualname__}")
        emit = self.__dict__.get("_pyi_emit") if hasattr(self, "__dict__") else None
        if emit is None:
            emit = _child_emitter
        if emit is not None:
            emit(name, payload)


def local_execution(fn: F) -> F:
    """Mark a ProxiedSingleton method to run in the caller's process instead of
    on the host (its ``self`` is then the proxy: other methods stay remote)."""
    fn._pyi_local = True  # type: ignore[attr-defined]
    return fn


def singleton_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _SingletonMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if _child_caller is not None:
            return _proxy(cls, "remote")
        if in_local_extension.get():
            return _proxy(cls, "local")
        return cls._pyi_get_instance(*args, **kwargs)  # type: ignore[attr-defined]


class ProxiedSingleton(metaclass=_SingletonMeta):
    """A class with one real instance, owned by the host.

    In the host, ``MyAPI()`` returns that instance. Inside an extension,
    ``MyAPI()`` returns a proxy whose public methods are awaitable and run on
    the host's instance (``await api.get(k)``, whether the host's method is
    sync or async). Methods marked ``@local_execution`` run in the caller.
    Pass the class in ``ExtensionConfig(apis=[MyAPI])`` so the host serves it;
    define it in an importable module (not ``__main__``), since extensions
    import it by its module name.
    """

    @classmethod
    def _pyi_get_instance(cls, *args: Any, **kwargs: Any) -> Any:
        inst = cls.__dict__.get("_pyi_instance")
        if inst is None:
            inst = type.__call__(cls, *args, **kwargs)
            type.__setattr__(cls, "_pyi_instance", inst)
        return inst


@contextlib.contextmanager
def singleton_scope() -> Iterator[None]:
    """pyisolate 0.x's test helper: the host's ProxiedSingleton instances
    made inside the block are dropped at its end (the next ``MyAPI()``
    makes a new one); those made before it stay, and are used inside."""
    before = {
        cls: cls.__dict__["_pyi_instance"]
        for cls in _singleton_classes()
        if "_pyi_instance" in cls.__dict__
    }
    try:
        yield
    finally:
        for cls in _singleton_classes():
            if cls in before:
                type.__setattr__(cls, "_pyi_instance", before[cls])
            elif "_pyi_instance" in cls.__dict__:
                type.__delattr__(cls, "_pyi_instance")


def _singleton_classes() -> list[type]:
    found: list[type] = []
    todo = list(ProxiedSingleton.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return found


_proxy_classes: dict[tuple[type, str], type] = {}
_proxies: dict[tuple[type, str], Any] = {}


def _make_stub(name: str, mode: str) -> Callable[..., Awaitable[Any]]:
    if mode == "remote":

        async def stub(self: Any, *args: Any, **kwargs: Any) -> Any:
            assert _child_caller is not None
            return await _child_caller(self._pyi_key, name, args, kwargs)
    else:

        async def stub(self: Any, *args: Any, **kwargs: Any) -> Any:
            real = self._pyi_class._pyi_get_instance()
            result = getattr(real, name)(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

    stub.__name__ = name
    stub.__qualname__ = name
    return stub


def _proxy(cls: type, mode: str) -> Any:
    key = (cls, mode)
    inst = _proxies.get(key)
    if inst is not None:
        return inst
    ns: dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod, property)):
            continue
        if getattr(attr, "_pyi_local", False):
            continue
        if inspect.isfunction(attr):
            ns[name] = _make_stub(name, mode)
    ns["__repr__"] = lambda self: f"<{cls.__qualname__} proxy to the host's instance>"
    pcls = _proxy_classes.get(key)
    if pcls is None:
        pcls = _SingletonMeta(f"{cls.__name__}Proxy", (cls,), ns)
        _proxy_classes[key] = pcls
    inst = object.__new__(pcls)
    inst.__dict__["_pyi_key"] = singleton_key(cls)
    inst.__dict__["_pyi_class"] = cls
    inst.__dict__["_pyi_service"] = "api." + singleton_key(cls) if mode == "remote" else ""
    _proxies[key] = inst
    return inst


def is_singleton_proxy(obj: Any) -> bool:
    return isinstance(obj, ProxiedSingleton) and "_pyi_key" in getattr(obj, "__dict__", {})
