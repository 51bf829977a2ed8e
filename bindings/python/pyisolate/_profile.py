"""``await ext.profile(seconds)``: a CPU profile of a running extension.

A sampling profiler: a thread of its own reads every other thread's stack
(``sys._current_frames()``) each ``interval`` seconds and counts each stack
it sees. Sampling, not ``cProfile``, because it sees every thread (the
extension's loop and the worker threads its plain methods run in), needs
nothing from the code it watches (cProfile hooks every call of the one
thread it was started in, and slows it), and starts and stops on a process
that goes on serving. The result is *collapsed stacks* (one line per
distinct stack, root first, frames joined by ``;``, then its sample
count), which flame-graph tools read (speedscope, flamegraph.pl).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_SECONDS = 3600.0
MIN_INTERVAL = 0.0005  # seconds between samples, at least


@dataclass
class Profile:
    """What ``ext.profile(seconds)`` returns.

    ``stacks``: each distinct stack seen (``"thread;outer (file:line);...;
    inner (file:line)"``, the line where each function starts) and how
    many samples saw it; ``samples``: the samples taken (one per thread per
    tick); ``seconds`` and ``interval``: as asked; ``pid``: the process."""

    stacks: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    interval: float = 0.0
    pid: int | None = None

    def collapsed(self) -> str:
        """The profile as collapsed stacks: ``stack count`` per line, the
        most seen first (the input of flamegraph.pl and speedscope)."""
        rows = sorted(self.stacks.items(), key=lambda kv: (-kv[1], kv[0]))
        return "".join(f"{stack} {count}\n" for stack, count in rows)

    def functions(self) -> dict[str, int]:
        """Samples per function (``name (file:line)``), counted once per
        sample it was on the stack of, the most seen first."""
        out: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            for frame in set(stack.split(";")[1:]):
                out[frame] += count
        return dict(out.most_common())


def check(seconds: float, interval: float) -> None:
    """ValueError for a duration or interval out of range."""
    if not 0 < float(seconds) <= MAX_SECONDS:
        raise ValueError(f"profile seconds must be in (0, {MAX_SECONDS}], not {seconds!r}")
    if not MIN_INTERVAL <= float(interval) <= float(seconds):
        raise ValueError(
            f"profile interval must be in [{MIN_INTERVAL}, seconds], not {interval!r}"
        )


def _frame_name(frame: Any) -> str:
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})"


def sample(seconds: float, interval: float) -> Profile:
    """Sample this process's other threads for ``seconds`` (blocks)."""
    me = threading.get_ident()
    stacks: Counter[str] = Counter()
    samples = 0
    end = time.monotonic() + seconds
    while True:
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            parts = []
            f: Any = frame
            while f is not None:
                parts.append(_frame_name(f))
                f = f.f_back
            parts.append(names.get(ident, f"thread {ident}"))
            stacks[";".join(reversed(parts))] += 1
            samples += 1
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    return Profile(dict(stacks), samples, seconds, interval)


async def sample_async(seconds: float, interval: float) -> Profile:
    """sample() in a thread of its own (not the loop's executor, whose
    threads may all be busy with the very code to profile)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Profile] = loop.create_future()

    def run() -> None:
        try:
            result = sample(seconds, interval)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=run, name="pyisolate-profiler", daemon=True).start()
    return await done


def _settle(
    fut: asyncio.Future[Profile], result: Profile | None, exc: BaseException | None
) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert result is not None
        fut.set_result(result)


def to_wire(profile: Profile) -> dict[str, Any]:
    return {
        "stacks": profile.stacks,
        "samples": profile.samples,
        "seconds": profile.seconds,
        "interval": profile.interval,
        "pid": profile.pid,
    }


def from_wire(data: dict[str, Any]) -> Profile:
    return Profile(
        {str(k): int(v) for k, v in dict(data["stacks"]).items()},
        int(data["samples"]),
        float(data["seconds"]),
        float(data["interval"]),
        data.get("pid"),
    )
