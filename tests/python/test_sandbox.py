"""Sandboxed extensions (docs/security.md): each guarantee is checked from
inside a real extension process (extensions/sandbox_probe, which reports "ok" or
the errno of what it tried), most against a control extension with
sandbox_mode="disabled" that succeeds where the sandboxed one is refused.
What this kernel lacks is skipped, naming the feature."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyisolate
from conftest import EXTENSIONS, ext_config, manager, run, subprocess_env
from pyisolate import _sandbox

KERNEL = _sandbox.kernel()
ABI = int(KERNEL["landlock"])
SECCOMP = KERNEL["seccomp"] == "1"


def needs_abi(abi: int, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        ABI < abi, reason=f"this kernel's Landlock ABI {ABI} < {abi}, needed {what}"
    )


needs_seccomp = pytest.mark.skipif(not SECCOMP, reason="this kernel takes no seccomp filters")


def probe(name: str, **kw: object) -> pyisolate.ExtensionConfig:
    return ext_config(name, "sandbox_probe", **kw)


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the backlog)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@contextlib.contextmanager
def home_secret() -> Iterator[str]:
    """A file in the host user's home directory."""
    with tempfile.NamedTemporaryFile(dir=Path.home(), prefix=".pyisolate-test-secret-") as f:
        f.write(b"secret")
        f.flush()
        yield f.name


@needs_abi(3, "for filesystem rules")
def test_files_it_reads_and_writes(venv_root, tmp_path) -> None:
    readonly = tmp_path / "models"
    writable = tmp_path / "output"
    readonly.mkdir()
    writable.mkdir()
    (readonly / "weights").write_bytes(b"1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"2")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext, other, free = await asyncio.gather(
                mgr.load_extension(
                    probe(
                        "probe",
                        sandbox={"readonly_paths": [readonly], "writable_paths": [writable]},
                    )
                ),
                mgr.load_extension(probe("probe_other")),
                mgr.load_extension(probe("probe_free", sandbox_mode="disabled")),
            )
            env = await ext.environment()
            other_scratch = (await other.environment())["TMPDIR"]
            with home_secret() as secret:
                # It reads the system, the Python installation, its venv,
                # its module and readonly_paths...
                for path in (
                    "/usr/lib",
                    "/etc/passwd",
                    f"/proc/{await ext.getpid()}/status",
                    sys.base_prefix,
                    venv_root / "probe",
                    EXTENSIONS / "sandbox_probe",
                    readonly / "weights",
                ):
                    assert await ext.read(str(path)) == "ok", path
                # ...not the host user's home or a secret there, another
                # extension's venv or scratch dir, or anything else.
                for path in (
                    Path.home(),
                    secret,
                    venv_root / "probe_other",
                    other_scratch,
                    elsewhere,
                    tmp_path,
                    "/tmp",
                ):
                    assert await ext.read(str(path)) == "EACCES", path
                    assert await free.read(str(path)) == "ok", path
            # It writes its scratch dir and writable_paths, nothing else.
            scratch = env["TMPDIR"]
            assert env["HOME"] == scratch and env["XDG_CACHE_HOME"].startswith(scratch + "/")
            assert (await ext.use_scratch()).startswith(scratch + "/")
            assert await ext.write(str(writable / "result")) == "ok"
            assert (writable / "result").read_text().startswith("written")
            for path in (
                readonly / "new",
                EXTENSIONS / "sandbox_probe" / "planted.py",
                venv_root / "probe" / "planted",
                Path(other_scratch) / "planted",
                tmp_path / "planted",
                f"/tmp/pyisolate-planted-{os.getpid()}",
            ):
                assert await ext.write(str(path)) == "EACCES", path
                assert not os.path.exists(path)  # noqa: ASYNC240 - a test's check
            # Its scratch dir goes when it stops.
            assert os.path.isdir(scratch)  # noqa: ASYNC240 - a test's check
            await ext.stop()
            assert not os.path.exists(scratch)  # noqa: ASYNC240 - a test's check

    run(main())


@needs_abi(3, "for filesystem rules")
def test_shared_memory_works_but_cannot_be_listed(venv_root) -> None:
    np = pytest.importorskip("numpy")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(probe("probe_shm", dependencies=["numpy>=2.2"]))
            a = pyisolate.share(np.arange(1000.0))
            b = await ext.echo(a)
            assert pyisolate.region_name(b) == pyisolate.region_name(a)
            assert (b == a).all()
            assert await ext.read("/dev/shm") == "EACCES"
            # Names it makes are not one after the other: not guessable.
            first, second = await ext.region_names(2)
            prefix, last = first.rsplit("-", 1)
            assert second.rsplit("-", 1)[0] == prefix
            assert abs(int(second.rsplit("-", 1)[1]) - int(last)) > 1

    run(main())


@needs_seccomp
def test_network(venv_root) -> None:
    async def main() -> None:
        with listening() as granted, listening() as other:
            async with manager(venv_root) as mgr:
                none, ports, everything = await asyncio.gather(
                    mgr.load_extension(probe("probe_net_none")),
                    mgr.load_extension(probe("probe_net_ports", sandbox={"network": [granted]})),
                    mgr.load_extension(probe("probe_net_all", sandbox={"network": True})),
                )
                # No network by default: no TCP, no UDP; calls still work.
                assert await none.connect(granted) == "EACCES"
                assert await none.udp() == "EACCES"
                assert await none.echo("broker") == "broker"
                if ABI >= 4:  # the listed TCP ports only
                    assert await ports.connect(granted) == "ok"
                    assert await ports.connect(other) == "EACCES"
                assert await everything.connect(other) == "ok"
                assert await everything.udp() == "ok"

    run(main())


@needs_abi(6, "to scope signals and abstract unix sockets")
def test_other_processes_are_out_of_reach(venv_root) -> None:
    name = f"pyisolate-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("\0" + name)
        listener.listen(8)

        async def main() -> None:
            async with manager(venv_root) as mgr:
                ext, other, free = await asyncio.gather(
                    mgr.load_extension(probe("probe")),
                    mgr.load_extension(probe("probe_other")),
                    mgr.load_extension(probe("probe_free", sandbox_mode="disabled")),
                )
                host, sibling = os.getpid(), await other.getpid()
                held = os.open(os.devnull, os.O_RDONLY)  # (the sibling's stdin is /dev/null)
                for pid, fd in ((host, held), (sibling, 0)):
                    assert await ext.signal(pid) == "EPERM"
                    assert await free.signal(pid) == "ok"
                    for entry in ("environ", "maps", f"fd/{fd}"):
                        assert await ext.read(f"/proc/{pid}/{entry}") == "EACCES", entry
                        assert await free.read(f"/proc/{pid}/{entry}") == "ok", entry
                    assert await ext.ptrace(pid) == "EPERM"
                os.close(held)
                assert await ext.abstract(name) == "EPERM"
                assert await free.abstract(name) == "ok"

        run(main())


def test_environment(venv_root, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("HF_HOME", "/srv/models")
    monkeypatch.setenv("LANG", "C.UTF-8")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext, free = await asyncio.gather(
                mgr.load_extension(
                    probe("probe", sandbox={"env": ["HF_HOME"]}, env={"EXPLICIT": "given"})
                ),
                mgr.load_extension(probe("probe_free", sandbox_mode="disabled")),
            )
            env = await ext.environment()
            assert "AWS_SECRET_ACCESS_KEY" not in env
            assert env["HF_HOME"] == "/srv/models"
            assert env["LANG"] == "C.UTF-8" and env["PATH"] and env["EXPLICIT"] == "given"
            assert env["PYI_SANDBOX"] == f"landlock={min(ABI, 6)} seccomp={int(SECCOMP)}"
            assert (await free.environment())["AWS_SECRET_ACCESS_KEY"] == "hunter2"

    run(main())


def test_memory_limit(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(probe("probe_mem", limits={"memory_mb": 256}))
            with pytest.raises(MemoryError):
                await ext.allocate(512)
            assert await ext.allocate(16) == 16 << 20  # and it goes on

    run(main())


def test_cpu_limit(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            spinner, bystander = await asyncio.gather(
                mgr.load_extension(probe("probe_cpu", limits={"cpu_seconds": 1})),
                mgr.load_extension(probe("probe")),
            )
            with pytest.raises(pyisolate.ExtensionCrashed) as info:
                await spinner.spin()
            assert info.value.reason == "CPU time limit"
            assert info.value.exit_status == -signal.SIGXCPU
            assert "CPU time limit" in str(info.value)
            assert await bystander.echo("on") == "on"

    run(main())


def test_open_files_limit(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext, unsandboxed, free = await asyncio.gather(
                mgr.load_extension(probe("probe_files", limits={"open_files": 64})),
                mgr.load_extension(
                    probe("probe_free", sandbox_mode="disabled", limits={"open_files": 64})
                ),
                mgr.load_extension(probe("probe")),
            )
            for limited in (ext, unsandboxed):  # limits apply without the sandbox too
                opened, failure = await limited.open_files(100)
                assert opened < 64 and failure == "EMFILE"
            assert await free.open_files(100) == (100, "ok")

    run(main())


def test_what_the_kernel_offers_is_logged_once(venv_root, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyisolate")
    monkeypatch.setattr(_sandbox, "_kernel", {})  # as in a new process

    async def main() -> None:
        async with manager(venv_root) as mgr:
            await asyncio.gather(
                mgr.load_extension(probe("probe")), mgr.load_extension(probe("probe_other"))
            )

    run(main())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox: ")]
    assert len(lines) == 1, lines
    assert f"Landlock ABI {ABI}" in lines[0] if ABI else "Landlock unavailable" in lines[0]
    assert "seccomp filters" in lines[0] and "cgroup v2 delegation" in lines[0]


# The host's script for the process limit, run as an ordinary user: RLIMIT_NPROC
# counts the user's processes and threads, and does not bind root.
_NPROC_HOST = textwrap.dedent("""
    import asyncio, os, sys
    import pyisolate

    def tasks_of_user():
        n = 0
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == os.getuid():
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
        return n

    async def main():
        cfg = pyisolate.ExtensionManagerConfig(venv_root_path=sys.argv[1])
        async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
            free = await mgr.load_extension(pyisolate.ExtensionConfig(
                name="probe_free", module_path=sys.argv[2], sandbox_mode="disabled"))
            limit = tasks_of_user() + 40  # room for its own threads
            ext = await mgr.load_extension(pyisolate.ExtensionConfig(
                name="probe_nproc", module_path=sys.argv[2], limits={"processes": limit}))
            print("capped", await ext.processes(200))
            print("free", await free.processes(50))
            env = await ext.environment()
            with open(sys.argv[3], "rb"):
                pass
            print("secret", await ext.read(sys.argv[3]), await free.read(sys.argv[3]))
            print("sandbox", env["PYI_SANDBOX"])
    asyncio.run(main())
""")


def _open_for_traversal() -> list[tuple[Path, int]]:
    """Give others the right to traverse (o+x, not to list) every directory
    above this interpreter, its installation, the package and the tests that
    lacks it; the (path, old mode) pairs to restore."""
    changed: list[tuple[Path, int]] = []
    tops = {
        Path(os.path.realpath(sys.executable)),
        Path(sys.base_prefix).resolve(),
        Path(sys.prefix).resolve(),
        Path(pyisolate.__file__).resolve(),
        EXTENSIONS.resolve(),
    }
    for top in tops:
        for d in reversed(top.parents):
            mode = d.stat().st_mode & 0o7777
            if not mode & 0o001 and d not in dict(changed):
                os.chmod(d, mode | 0o001)
                changed.append((d, mode))
    return changed


def test_process_limit_as_an_ordinary_user() -> None:
    """Also the one run of a host as an ordinary user: Landlock and seccomp
    need no privilege."""
    cmd = [sys.executable, "-c", _NPROC_HOST]
    env = subprocess_env()
    env.pop("PYI_RUNTIME_DIR", None)
    work = Path(tempfile.mkdtemp(prefix="pyisolate-test-user-"))  # where nobody can reach
    opened: list[tuple[Path, int]] = []
    try:
        if os.geteuid() == 0:
            # RLIMIT_NPROC does not bind root: run the host as nobody, who
            # must be able to reach this Python (pyenv's lives in root's
            # 0700 home: opened for traversal during the test only).
            opened += _open_for_traversal()
            probe_run = subprocess.run(
                ["runuser", "-u", "nobody", "--", sys.executable, "-c", "import pyisolate"],
                capture_output=True,
                env=env,
            )
            assert probe_run.returncode == 0, probe_run.stderr.decode(errors="replace")
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
            env["HOME"] = str(work)
        env["UV_CACHE_DIR"] = str(work / "uv-cache")
        secret = work / "secret"
        secret.write_bytes(b"x")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (work, secret):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        done = subprocess.run(
            [*cmd, str(work / "venvs"), str(EXTENSIONS / "sandbox_probe"), str(secret)],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=600,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for path, mode in reversed(opened):
            os.chmod(path, mode)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    started, failure = eval(lines["capped"])  # noqa: S307 - our own script's tuple
    assert failure == "EAGAIN" and started < 200, lines
    assert eval(lines["free"]) == (50, "ok")  # noqa: S307
    if ABI >= 3:
        assert lines["secret"] == "EACCES ok"
    assert lines["sandbox"] == f"landlock={min(ABI, 6)} seccomp={int(SECCOMP)}"


def test_it_cannot_take_another_extensions_service(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext, other = await asyncio.gather(
                mgr.load_extension(probe("probe")), mgr.load_extension(probe("probe_other"))
            )
            for service in ("ext.probe_other", "host", "ext.nobody_yet"):
                answer = await ext.offer(service)
                assert answer.startswith("PyisolateError: the broker refused service"), answer
            assert await other.echo("mine") == "mine"
            assert await ext.echo("still") == "still"

    run(main())


@needs_abi(4, "to pretend an older one")
def test_required_refuses_what_the_kernel_cannot_enforce(venv_root, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyisolate")
    monkeypatch.setenv(_sandbox.TEST_SWITCH, "3")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(pyisolate.ExtensionLoadError) as info:
                await mgr.load_extension(
                    probe("probe", sandbox={"network": [443]}, sandbox_mode="required")
                )
            text = str(info.value)
            assert "Landlock ABI 3 < 4 needed for network rules" in text
            assert "best_effort" in text  # what to do
            ext = await mgr.load_extension(
                probe(
                    "probe",
                    sandbox={"network": [443]},
                    sandbox_mode=pyisolate.SandboxMode.BEST_EFFORT,
                )
            )
            assert (await ext.environment())["PYI_SANDBOX"].startswith("landlock=3 ")
            await mgr.load_extension(probe("probe_other", sandbox={"network": [443]}))
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "not enforced" in r.getMessage()
        ]
        assert len(warnings) == 1, warnings  # one line, once
        assert "Landlock ABI 3 < 4 needed for network rules" in warnings[0]

    run(main())


def test_bad_sandbox_configs_are_refused_at_once(venv_root, tmp_path) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            bad = [
                ({"sandbox_mode": "strict"}, "sandbox_mode 'strict' is not one of"),
                ({"sandbox": {"network": [0]}}, "is not a TCP port"),
                ({"sandbox": {"network": "yes"}}, "give False, True or a list"),
                ({"sandbox": {"writable_paths": [tmp_path / "missing"]}}, "does not exist"),
                ({"sandbox": {"readonly_paths": str(tmp_path)}}, "must be a list"),
                (
                    {"sandbox": {"readonly_paths": {str(tmp_path): "/data"}}},
                    "shows paths where they are",
                ),
                ({"sandbox": {"env": ["NOT A NAME"]}}, "is not a variable name"),
                ({"limits": {"memory_mb": 0}}, "not a positive whole number"),
                ({"limits": {"cpu_seconds": True}}, "not a positive whole number"),
            ]
            for kw, message in bad:
                with pytest.raises(ValueError, match=message):
                    mgr.load_extension(probe("probe", **kw))
            with pytest.raises(TypeError, match="unknown SandboxConfig keys"):
                mgr.load_extension(probe("probe", sandbox={"network_ports": [1]}))
            # In the host's process nothing can be sandboxed: asking is refused...
            for kw in (
                {"sandbox": {}},
                {"sandbox_mode": "best_effort"},
                {"limits": {"memory_mb": 100}},
            ):
                with pytest.raises(ValueError, match="cannot be sandboxed"):
                    mgr.load_extension(probe("local", isolated=False, **kw))
            # ...and the manager's defaults do not apply to it.
            local = await mgr.load_extension(probe("local", isolated=False))
            assert await local.echo(1) == 1

    run(main())


@needs_abi(3, "for filesystem rules")
def test_remote_extension_runs_in_the_tickets_sandbox(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = mgr.load_extension(probe("probe_far", remote=True, limits={"open_files": 64}))
            proc = subprocess.Popen(  # noqa: ASYNC220 - a remote worker beside this loop
                [
                    sys.executable,
                    "-m",
                    "pyisolate.remote",
                    ext.ticket,
                    str(EXTENSIONS / "sandbox_probe"),
                ],
                env=subprocess_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                await asyncio.wait_for(ext.wait_ready(), 60)
                env = await ext.environment()
                assert await ext.getpid() == proc.pid  # itself, executed again
                assert env["PYI_SANDBOX"].startswith("landlock=")
                scratch = env["TMPDIR"]
                assert (await ext.use_scratch()).startswith(scratch + "/")
                with home_secret() as secret:
                    assert await ext.read(secret) == "EACCES"
                assert await ext.read(str(venv_root)) == "EACCES"
                assert await ext.read(os.getcwd()) == "EACCES"  # where it was started
                assert (await ext.open_files(100))[1] == "EMFILE"
                await ext.stop()
                assert proc.wait(timeout=60) == 0
                # its scratch dir is removed once it has ended
                for _ in range(600):
                    if not os.path.exists(scratch):  # noqa: ASYNC240 - a test's check
                        break
                    await asyncio.sleep(0.05)
                assert not os.path.exists(scratch)  # noqa: ASYNC240 - a test's check
            finally:
                if proc.poll() is None:
                    proc.kill()
                out = proc.communicate(timeout=30)[0].decode(errors="replace")
            assert "serving extension 'probe_far'" in out, out

    run(main())


def test_scratch_dirs_do_not_outlive_the_manager(venv_root) -> None:
    async def main() -> str:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(probe("probe"))
            return (await ext.environment())["TMPDIR"]

    scratch = run(main())
    assert not os.path.exists(scratch)
    assert not os.path.exists(os.path.dirname(os.path.dirname(scratch)))  # the runtime dir
