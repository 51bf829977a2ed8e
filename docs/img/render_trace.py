"""Render a pyisolate trace (manager.trace's Chrome trace-event JSON) as a
picture, as Perfetto lays it out: a band per process, a row per lane, a
bar per span (calls, served calls and the broker thread's hops in three
colours), arrows from each call through the broker to where it ran and
back. How docs/img/trace.png was made:

    python docs/img/render_trace.py calls.json docs/img/trace.png

Needs matplotlib.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"call": "#4c78a8", "serve": "#f58518", "broker": "#9d9d9d"}
BROKER_LANE = 1000  # the broker thread's lane in the host's process (_trace.BROKER_LANE)


def _depths(spans: list[dict[str, Any]]) -> dict[int, int]:
    """Each span's nesting depth in its lane (0: outermost), by id()."""
    out: dict[int, int] = {}
    lanes: dict[tuple[int, int], list[float]] = {}  # lane -> ends of the open spans
    for e in sorted(spans, key=lambda e: (e["ts"], -e["dur"])):
        stack = lanes.setdefault((e["pid"], e["tid"]), [])
        while stack and stack[-1] <= e["ts"]:
            stack.pop()
        out[id(e)] = len(stack)
        stack.append(e["ts"] + e["dur"])
    return out


def render(trace: dict[str, Any], out: str) -> None:
    events = trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    spans = [e for e in events if e["ph"] == "X"]
    depth = _depths(spans)
    # Rows: the host first, then each extension; its lanes in order, each
    # as tall as its deepest nesting (a nested span is drawn below its parent).
    order = sorted(names, key=lambda pid: (names[pid] != "host", names[pid]))
    top: dict[tuple[int, int], float] = {}
    ticks, labels = [], []
    y = 0.0
    for pid in order:
        for tid in sorted({e["tid"] for e in spans if e["pid"] == pid}):
            deep = max(depth[id(e)] for e in spans if (e["pid"], e["tid"]) == (pid, tid))
            top[(pid, tid)] = y
            ticks.append(y + deep / 2)
            lane = "broker thread" if tid == BROKER_LANE else f"lane {tid}"
            labels.append(f"{names[pid]} (pid {pid})\n{lane}")
            y += deep + 1.6
    fig, ax = plt.subplots(figsize=(11, 0.55 * y + 1.4))

    def level(e: dict[str, Any]) -> float:
        return top[(e["pid"], e["tid"])] + depth.get(id(e), 0)

    for e in spans:
        ts, dur = e["ts"] / 1000.0, e["dur"] / 1000.0
        ax.barh(
            level(e), dur, left=ts, height=0.8, color=COLOURS[e["cat"]], edgecolor="black", lw=0.4
        )
        if e["cat"] != "broker":  # a hop is too short for a label
            ax.text(
                ts + dur / 2, level(e), e["args"]["method"], ha="center", va="center", fontsize=7
            )
    spans_at = {(e["pid"], e["tid"], e["ts"]): e for e in spans}
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    for e in events:
        if e["ph"] == "f" and e["id"] in starts:
            s = starts[e["id"]]
            callee = spans_at.get((e["pid"], e["tid"], e["ts"]))
            caller = [
                c
                for c in spans
                if (c["pid"], c["tid"]) == (s["pid"], s["tid"])
                and c["ts"] <= s["ts"] <= c["ts"] + c["dur"]
            ]
            y0 = (
                level(max(caller, key=lambda c: depth[id(c)]))
                if caller
                else top[(s["pid"], s["tid"])]
            )
            y1 = level(callee) if callee else top[(e["pid"], e["tid"])]
            ax.annotate(
                "",
                xy=(e["ts"] / 1000.0, y1 - 0.4 if y1 > y0 else y1 + 0.4),
                xytext=(s["ts"] / 1000.0, y0 + 0.4 if y1 > y0 else y0 - 0.4),
                arrowprops={"arrowstyle": "->", "color": "#333333", "lw": 0.8},
            )
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(y - 1.0, -1.0)
    ax.set_xlabel("ms since the first span (CLOCK_MONOTONIC)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(
        handles,
        ["call (caller's side)", "served (callee's side)", "broker hop"],
        loc="upper right",
        fontsize=8,
    )
    ax.set_title("manager.trace(): two calls of make, each calling the host's Cache back")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        render(json.load(f), sys.argv[2])
