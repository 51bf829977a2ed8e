"""await ext.profile(seconds): a CPU profile of the running extension's
process (its threads' stacks, sampled), taken while it goes on serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import pyisolate
from conftest import manager, run

SOURCE = """
import time

from pyisolate import ExtensionBase


def spin_for_the_profiler(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


class Busy(ExtensionBase):
    def busy(self, seconds):  # a plain method: a worker thread
        return spin_for_the_profiler(seconds) > 0

    async def echo(self, value):
        return value
"""


@pytest.mark.parametrize("isolated", [True, False])
def test_profile_shows_the_busy_method(venv_root: Path, tmp_path: Path, isolated: bool) -> None:
    folder = tmp_path / f"busy_{isolated}"
    folder.mkdir()
    (folder / "__init__.py").write_text(SOURCE)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(
                    name=f"busy_{isolated}", module_path=str(folder), isolated=isolated
                )
            )
            busy = asyncio.ensure_future(ext.busy(3.0))
            await asyncio.sleep(0.3)  # let it start spinning
            profile = await ext.profile(1.0, interval=0.01)
            # It went on serving meanwhile, and afterwards.
            assert await ext.echo(5) == 5
            assert await busy is True
            assert profile.pid == (ext.pid if isolated else __import__("os").getpid())
            assert profile.samples > 0
            spinning = sum(n for s, n in profile.stacks.items() if "spin_for_the_profiler" in s)
            # The worker thread, busy all along, was seen in the spinning function.
            worker = sum(n for s, n in profile.stacks.items() if ";busy (" in s)
            assert worker > 0 and spinning == worker
            lines = profile.collapsed().splitlines()
            assert any("spin_for_the_profiler" in line for line in lines)
            _stack, count = lines[0].rsplit(" ", 1)
            assert int(count) == max(profile.stacks.values())
            top = profile.functions()
            assert any(name.startswith("spin_for_the_profiler (") for name in top)
            with pytest.raises(ValueError, match="seconds"):
                await ext.profile(0)
            with pytest.raises(ValueError, match="interval"):
                await ext.profile(1.0, interval=5.0)
            await ext.stop()
            with pytest.raises(pyisolate.ExtensionStopped):
                await ext.profile(0.1)

    run(main())
