"""Code written for pyisolate 0.x runs unchanged (issue 11, docs/porting.md).

Each test is 0.x-style code through the public API: configs with 0.x's keys
(``share_cuda_ipc`` was a required key of its TypedDict), handles used
without awaiting load_extension, ``manager.stop_all_extensions()``.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import inspect
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyisolate
from conftest import EXTENSIONS, run, subprocess_env


def zero_x_config(name: str, folder: str = "shadowed", **kw: Any) -> Any:
    """An ExtensionConfig as 0.x code writes one: every key of its TypedDict
    that was required, and module_path (tests/python/extensions/<folder>)."""
    keys: dict[str, Any] = dict(
        name=name,
        module_path=str(EXTENSIONS / folder),
        isolated=True,
        dependencies=[],
        apis=[],
        share_torch=False,
        share_cuda_ipc=False,
    )
    keys.update(kw)
    return pyisolate.ExtensionConfig(**keys)


def zero_x_manager(venv_root: Path) -> Any:
    return pyisolate.ExtensionManager(
        pyisolate.ExtensionBase, pyisolate.ExtensionManagerConfig(venv_root_path=str(venv_root))
    )


def write_wheel(path: str, dist: str, version: str, files: dict[str, str]) -> None:
    """A pure-Python wheel holding ``files`` (name -> text)."""
    import base64 as _b64
    import hashlib as _hl
    import zipfile as _zf

    info = f"{dist}-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    with _zf.ZipFile(path, "w") as z:
        for name, text in files.items():
            data = text.encode()
            digest = _b64.urlsafe_b64encode(_hl.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
            z.writestr(name, data)
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


def probe_wheel(folder: Path, version: str) -> Path:
    """The wheel of package ``porting_probe`` at ``version``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"porting_probe-{version}-py3-none-any.whl"
    write_wheel(
        str(path),
        "porting_probe",
        version,
        {"porting_probe/__init__.py": f"VERSION = {version!r}\n"},
    )
    return path


# -- names as people write them ------------------------------------------------


def test_names_as_people_write_them(venv_root, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyisolate.extension")

    async def main() -> None:
        manager = zero_x_manager(venv_root)
        names = {"node pack (v2)": "node_pack_v2", "画像 tools": "画像_tools", "x`id`y": "x_id_y"}
        exts = {name: manager.load_extension(zero_x_config(name)) for name in names}
        for name, key in names.items():
            ext = exts[name]
            assert await ext.remote.pid() == ext.pid
            assert ext.name == name and manager.get_extension(name) is ext
            assert (venv_root / key / "bin" / "python").exists()
            assert manager.service_stats(f"ext.{key}")["pid"] == ext.pid
            # What 0.x told its extension processes, read by code ported from it.
            assert await ext.remote.environ("PYISOLATE_EXTENSION") == name
            assert await ext.remote.environ("PYISOLATE_CHILD") == "1"
        # Two names that make the same folder: the second is refused, naming both.
        with pytest.raises(ValueError, match=r"'node pack \(v2\)'.*'node_pack_v2'"):
            manager.load_extension(zero_x_config("node_pack_v2"))
        with pytest.raises(ValueError, match="node_pack_v2"):
            manager.load_extension(zero_x_config("node  pack [v2]"))
        # A load error keeps the name as given (the child's traceback, not an exit).
        with pytest.raises(pyisolate.ExtensionLoadError) as info:
            await manager.load_extension(zero_x_config("broken pack (v2)", "broken"))
        assert info.value.extension == "broken pack (v2)"
        assert "failed to load: ModuleNotFoundError" in str(info.value).splitlines()[0]
        # Once one is stopped, the other name may have the folder.
        await exts["x`id`y"].stop()
        again = await manager.load_extension(zero_x_config("x id y"))
        assert await again.remote.name() == "the extension's own name()"
        await manager.stop_all()

    run(main())
    # Logs name the extension as given.
    lines = [r for r in caplog.records if r.name == "pyisolate.extension.画像 tools"]
    assert any("[画像 tools] shadowed: module imported" in r.getMessage() for r in lines)


@pytest.mark.parametrize(
    "name", ["../x", "/abs", "a/b", "..", "a\x00b", "a\\b", "()", " _ ", ".hidden", "a\nb"]
)
def test_names_that_are_paths_or_nothing_refused(venv_root, name: str) -> None:
    async def main() -> None:
        manager = zero_x_manager(venv_root / "refused")
        with pytest.raises(ValueError, match="extension name"):
            manager.load_extension(zero_x_config(name))
        await manager.stop_all()

    run(main())
    assert not (venv_root / "x").exists() and not (venv_root / "refused").exists()


# -- stop_all_extensions() ------------------------------------------------------


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_stop_all_extensions_after_asyncio_run(venv_root, tmp_path) -> None:
    """The loop is closed: the broker ends the processes (no stop() hook)."""
    mark = tmp_path / "stops"
    manager = zero_x_manager(venv_root)

    async def main() -> Any:
        ext = manager.load_extension(
            zero_x_config(
                "stopper",
                env={"STOP_MARK": str(mark)},
                sandbox={"writable_paths": [str(mark.parent)]},
            )
        )
        await ext.remote.pid()
        return ext

    ext = asyncio.run(main())
    pid = ext.pid
    assert _alive(pid)
    manager.stop_all_extensions()
    assert not _alive(pid) and not ext.alive
    assert not mark.exists()  # documented: no loop, no hooks
    with pytest.raises(pyisolate.PyisolateError, match="stopped"):
        manager.load_extension(zero_x_config("stopper"))
    manager.stop_all_extensions()  # again: nothing to do


def test_stop_all_extensions_on_the_running_loop(venv_root, tmp_path) -> None:
    """0.x code calls it from async code without await: it must not deadlock."""
    mark = tmp_path / "stops"

    async def main() -> None:
        manager = zero_x_manager(venv_root)
        ext = manager.load_extension(
            zero_x_config(
                "stopper",
                env={"STOP_MARK": str(mark)},
                sandbox={"writable_paths": [str(mark.parent)]},
            )
        )
        pid = await ext.remote.pid()
        manager.stop_all_extensions()
        assert not _alive(pid) and not ext.alive
        with pytest.raises(pyisolate.ExtensionStopped):
            await ext.remote.pid()
        await manager.stop_all()  # after it: nothing to do

    run(main())
    assert not mark.exists()


def test_stop_all_extensions_from_another_thread(venv_root, tmp_path) -> None:
    """The manager's loop runs in another thread: stop_all() runs there, with
    the stop() hooks, and the call returns when it is done."""
    mark = tmp_path / "stops"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        manager = zero_x_manager(venv_root)

        async def load() -> Any:
            ext = manager.load_extension(
                zero_x_config(
                    "stopper",
                    env={"STOP_MARK": str(mark)},
                    sandbox={"writable_paths": [str(mark.parent)]},
                )
            )
            await ext.remote.pid()
            return ext

        ext = asyncio.run_coroutine_threadsafe(load(), loop).result(120)
        pid = ext.pid
        manager.stop_all_extensions()
        assert mark.read_text() == "stop 1\n"
        assert not _alive(pid) and not ext.alive
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_stop_all_extensions_with_an_idle_loop(venv_root, tmp_path) -> None:
    """A loop the program runs itself, idle now: stop_all() runs on it."""
    mark = tmp_path / "stops"
    loop = asyncio.new_event_loop()
    try:
        manager = zero_x_manager(venv_root)

        async def load() -> Any:
            return await manager.load_extension(
                zero_x_config(
                    "stopper",
                    env={"STOP_MARK": str(mark)},
                    sandbox={"writable_paths": [str(mark.parent)]},
                )
            )

        ext = loop.run_until_complete(load())
        manager.stop_all_extensions()
        assert mark.read_text() == "stop 1\n"
        assert not ext.alive
    finally:
        loop.close()


# -- dependencies ["-e", path] ---------------------------------------------------

BACKEND = '''\
"""A PEP 517/660 build backend that needs nothing from an index."""
import os

NAME, VERSION = "porting_editable", "0.1"


def _wheel(directory, files):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    write_wheel(os.path.join(directory, name), NAME, VERSION, files)
    return name


def build_wheel(directory, config_settings=None, metadata_directory=None):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), NAME, "__init__.py")
    return _wheel(directory, {f"{NAME}/__init__.py": open(src).read()})


def build_editable(directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    return _wheel(directory, {f"{NAME}.pth": here + "\\n"})


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel

'''


def editable_project(root: Path) -> Path:
    """A project with package ``porting_editable`` and an in-tree backend."""
    (root / "porting_editable").mkdir(parents=True)
    (root / "porting_editable" / "__init__.py").write_text("VERSION = 'editable'\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "porting_editable"\nversion = "0.1"\n\n'
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    )
    (root / "backend.py").write_text(BACKEND + inspect.getsource(write_wheel))
    return root


def test_editable_dependency_as_two_items(venv_root, tmp_path) -> None:
    project = editable_project(tmp_path / "editable project")

    async def main() -> None:
        manager = zero_x_manager(venv_root)
        ext = manager.load_extension(zero_x_config("editable", dependencies=["-e", str(project)]))
        version, file = await ext.import_probe("porting_editable")
        assert (version, file) == ("editable", str(project / "porting_editable" / "__init__.py"))
        # The path item is checked as in "-e <path>".
        for deps in (
            ["-e"],
            ["-e", "numpy"],
            ["-e", "--index-url=https://x.invalid"],
            ["-e", f"{project};id"],
            ["numpy", "-e"],
        ):
            with pytest.raises(ValueError, match="refused dependency"):
                manager.load_extension(zero_x_config("editable2", dependencies=deps))
        await manager.stop_all()

    run(main())


# -- 0.x config keys ---------------------------------------------------------------


class _Index(http.server.BaseHTTPRequestHandler):
    """A package index (PEP 503) with Basic authentication user:s3cret."""

    folder: Path

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:  # uv asks whether ranges work: no
        self.send_response(405)
        self.end_headers()

    def do_GET(self) -> None:
        want = "Basic " + base64.b64encode(b"user:s3cret").decode()
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="index"')
            self.end_headers()
            return
        if self.path.rstrip("/") == "/simple/porting-probe":
            body = "".join(
                f'<a href="/files/{p.name}">{p.name}</a>\n' for p in self.folder.iterdir()
            ).encode()
            ctype = "text/html"
        elif self.path.startswith("/files/") and (self.folder / self.path[7:]).is_file():
            body = (self.folder / self.path[7:]).read_bytes()
            ctype = "application/octet-stream"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def index(tmp_path) -> Iterator[str]:
    """The URL, with its credentials, of a private index holding porting-probe 3.0."""
    handler = type("Handler", (_Index,), {"folder": tmp_path / "files"})
    probe_wheel(tmp_path / "files", "3.0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://user:s3cret@127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_extra_index_urls(venv_root, index, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        manager = zero_x_manager(venv_root)
        ext = manager.load_extension(
            zero_x_config(
                "private index", dependencies=["porting-probe==3.0"], extra_index_urls=[index]
            )
        )
        version, _ = await ext.import_probe("porting_probe")
        assert version == "3.0"
        for bad in (
            "ftp://example.org/simple",
            "https://example.org/a b",
            "https://",
            "--index-url=https://example.org",
            "https://ex`id`.org/simple",
        ):
            with pytest.raises(ValueError, match="refused extra index URL"):
                manager.load_extension(zero_x_config("bad index", extra_index_urls=[bad]))
        await manager.stop_all()

    run(main())
    # The credentials reach uv, never the log nor the venv's files.
    assert "s3cret" not in caplog.text
    assert "***@127.0.0.1" in caplog.text
    fingerprint = (venv_root / "private_index" / ".pyisolate-fingerprint").read_text()
    assert "127.0.0.1" in fingerprint and "s3cret" not in fingerprint


def test_zero_x_keys_accepted(venv_root) -> None:
    """share_cuda_ipc, execution_model, package_manager='uv', module: accepted."""

    async def main() -> None:
        manager = zero_x_manager(venv_root)
        coupled = manager.load_extension(
            zero_x_config(
                "coupled",
                share_cuda_ipc=True,
                execution_model="host-coupled",
                package_manager="uv",
                module="coupled",
            )
        )
        sealed = manager.load_extension(
            {
                "name": "sealed",
                "module_path": str(EXTENSIONS / "shadowed"),
                "isolated": True,
                "dependencies": [],
                "apis": [],
                "share_torch": False,
                "share_cuda_ipc": False,
                "execution_model": "sealed_worker",
            }
        )
        assert await coupled.remote.pid() == coupled.pid
        assert await sealed.remote.pid() == sealed.pid
        await manager.stop_all()

    run(main())


@pytest.mark.parametrize(
    "keys, error",
    [
        ({"package_manager": "conda"}, "conda environments are not supported"),
        ({"execution_model": "sealed"}, "'host-coupled' or 'sealed_worker'"),
        ({"execution_model": "sealed_worker", "share_torch": True}, "share_torch=False"),
    ],
)
def test_zero_x_values_refused(venv_root, keys: dict[str, Any], error: str) -> None:
    async def main() -> None:
        manager = zero_x_manager(venv_root)
        with pytest.raises(ValueError, match=error):
            manager.load_extension(zero_x_config("refused", **keys))
        await manager.stop_all()

    run(main())


@pytest.mark.parametrize(
    "key, value, why",
    [
        ("conda_channels", ["conda-forge"], "conda environments are not supported"),
        ("conda_dependencies", ["numpy"], "conda environments are not supported"),
        ("conda_platforms", ["linux-64"], "conda environments are not supported"),
        ("sealed_host_ro_paths", ["/opt/code"], "install other code into its venv"),
        ("cuda_wheels", {"index_url": "https://x", "packages": ["a"]}, "extra_index_urls"),
    ],
)
def test_zero_x_keys_refused(key: str, value: Any, why: str) -> None:
    with pytest.raises(TypeError, match=f"{key}: .*{why}"):
        zero_x_config("refused", **{key: value})
    with pytest.raises(TypeError, match=f"{key}: .*{why}"):
        pyisolate.ExtensionConfig.from_any({"name": "refused", key: value})


# Every ExtensionConfig key of pyisolate 0.10.2 (its config.py), but the
# sandbox's, which come with the sandbox (docs/porting.md).
ZERO_X_KEYS = [
    "name",
    "module_path",
    "module",
    "isolated",
    "dependencies",
    "apis",
    "share_torch",
    "share_cuda_ipc",
    "env",
    "package_manager",
    "execution_model",
    "sealed_host_ro_paths",
    "conda_channels",
    "conda_dependencies",
    "conda_platforms",
    "cuda_wheels",
    "extra_index_urls",
]


def test_every_zero_x_key_accepted_or_refused_with_why() -> None:
    for key in ZERO_X_KEYS:
        try:
            pyisolate.ExtensionConfig.from_any({"name": "x", key: None})
        except TypeError as exc:
            assert "docs/porting.md" in str(exc) and f"{key}: " in str(exc), (key, exc)
    porting = (Path(__file__).resolve().parents[2] / "docs" / "porting.md").read_text()
    for key in [*ZERO_X_KEYS, "sandbox", "sandbox_mode", "venv_root_path"]:
        assert f"`{key}`" in porting, key


# -- singleton_scope ----------------------------------------------------------------


class Settings(pyisolate.ProxiedSingleton):
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}


class Scratch(pyisolate.ProxiedSingleton):
    pass


def test_singleton_scope() -> None:
    """0.x's test helper: instances made inside are dropped at its end."""
    settings = Settings()
    with pyisolate.singleton_scope():
        assert Settings() is settings
        scratch = Scratch()
        assert Scratch() is scratch
    assert Settings() is settings
    assert Scratch() is not scratch


# -- handle attributes and remote methods of the same names -------------------------


def test_remote_methods_named_like_handle_attributes(venv_root) -> None:
    async def main() -> None:
        manager = zero_x_manager(venv_root)
        ext = manager.load_extension(zero_x_config("shadowed"))
        assert await ext.remote.pid() == ext.pid != os.getpid()
        assert await ext.remote.name() == "the extension's own name()"
        assert await ext.remote.config() == {"from": "the extension"}
        assert await ext.remote.stop() == 1  # the method: the process stays
        assert ext.alive and await ext.remote.pid() == ext.pid
        own = [a for a in dir(ext) if not a.startswith("_")]
        assert set(own) >= {"pid", "name", "config", "stop", "remote", "with_timeout"}
        for attr in set(own) - {"pid", "name", "config", "stop"}:
            assert await getattr(ext.remote, attr)() == attr
        assert await ext.with_timeout(60).pid() == ext.pid
        await manager.stop_all()

    run(main())
    # The blocking handle reaches them the same way.
    with pyisolate.SyncExtensionManager(
        pyisolate.ExtensionBase, pyisolate.ExtensionManagerConfig(venv_root_path=str(venv_root))
    ) as manager:
        ext = manager.load_extension(zero_x_config("shadowed"))
        assert ext.remote.pid() == ext.pid
        assert ext.remote.name() == "the extension's own name()"
        assert ext.remote.stop() == 1
        assert ext.remote.remote() == "remote"


# -- the seed's "Complete Application Structure" ---------------------------------

SEED_MAIN = """\
# main.py
if __name__ == "__main__":
    # When running as the main script, import and run your host application
    from host import main
    main()
else:
    # When imported by extension processes, ensure venv is properly activated
    import os
    import site
    import sys

    if os.name == "nt":  # Windows-specific venv activation
        venv = os.environ.get("VIRTUAL_ENV", "")
        if venv != "":
            sys.path.insert(0, os.path.join(venv, "Lib", "site-packages"))
            site.addsitedir(os.path.join(venv, "Lib", "site-packages"))
"""

# The seed leaves five names of host.py undefined; this prelude defines them:
# discover_extensions() names each extension after its folder as it yields it.
SEED_PRELUDE = """\
import json
from pathlib import Path

from pyisolate import ExtensionBase
from shared import SharedAPI


def discover_extensions():
    global extension_name
    for path in sorted(Path("extensions").iterdir()):
        extension_name = path.name
        yield str(path)


def load_dependencies(extension_path):
    return json.loads((Path(extension_path) / "dependencies.json").read_text())


"""

SEED_HOST = """\
# host.py - Your main application logic
import pyisolate
import asyncio

async def async_main():
    # Create extension manager
    config = pyisolate.ExtensionManagerConfig(
        venv_root_path="./extension-venvs"
    )
    manager = pyisolate.ExtensionManager(ExtensionBase, config)

    # Load extensions (e.g., from a directory or configuration file)
    extensions = []
    for extension_path in discover_extensions():
        extension_config = pyisolate.ExtensionConfig(
            name=extension_name,
            module_path=extension_path,
            isolated=True,
            dependencies=load_dependencies(extension_path),
            apis=[SharedAPI]  # Optional shared singletons
        )
        extension = manager.load_extension(extension_config)
        extensions.append(extension)

    # Use extensions
    for extension in extensions:
        result = await extension.process()
        print(f"Result: {result}")

    # Clean shutdown
    for extension in extensions:
        await extension.stop()

def main():
    asyncio.run(async_main())
"""

SEED_SHARED = """\
from pyisolate import ProxiedSingleton


class SharedAPI(ProxiedSingleton):
    def __init__(self):
        self.seen = []

    def hello(self, who):
        self.seen.append(who)
        return len(self.seen)
"""

SEED_EXTENSION = """\
import os

import porting_probe
from pyisolate import ExtensionBase
from shared import SharedAPI


class Extension(ExtensionBase):
    async def process(self):
        here = os.path.basename(os.path.dirname(__file__))
        await SharedAPI().hello(here)
        return f"{here} has porting_probe {porting_probe.VERSION}"
"""


def test_seed_complete_application_structure(tmp_path, venv_root) -> None:
    """The seed's main.py and host.py as written (host.py's five undefined
    names given by a prelude); extensions in folders named as people name
    them, each with its own version of one package."""
    app = tmp_path / "app"
    wheels = tmp_path / "wheels"
    for folder, version in (("Node Pack (v1)", "1.0"), ("画像 tools", "2.0")):
        ext = app / "extensions" / folder
        ext.mkdir(parents=True)
        (ext / "__init__.py").write_text(SEED_EXTENSION)
        wheel = probe_wheel(wheels / version, version)
        (ext / "dependencies.json").write_text(f'["{wheel}"]')
    (app / "main.py").write_text(SEED_MAIN)
    (app / "host.py").write_text(SEED_PRELUDE + SEED_HOST)
    (app / "shared.py").write_text(SEED_SHARED)
    proc = subprocess.run(
        [sys.executable, "main.py"],
        cwd=app,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "Result: Node Pack (v1) has porting_probe 1.0",
        "Result: 画像 tools has porting_probe 2.0",
    ]
    assert sorted(
        p.name for p in (app / "extension-venvs").iterdir() if not p.name.startswith(".")
    ) == ["Node_Pack_v1", "画像_tools"]
