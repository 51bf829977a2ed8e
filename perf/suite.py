#!/usr/bin/env python3
"""pyisolate's benchmark suite: this project beside its peer and the floors.

One run, one machine, the same workloads on:

- ``ours``:    this project through its public Python API (the .venv that runs
  this script);
- ``peer``:    ``pyisolate==0.10.2`` from PyPI, installed by the suite into a
  venv of its own (uv), driven through its public API;
- ``asyncio``: the Python floor: an asyncio echo over a Unix socket pair to a
  second process;
- ``zmq``:     a direct ZeroMQ DEALER<->DEALER ``ipc://`` echo (pyzmq) to a
  second process;
- ``c-socketpair`` and ``c-zmq``: the C floors, from ``build/perf/pyi_bench
  --quick --samples --json`` run in the same suite in two halves, one before
  the Python rows and one after them, their samples merged (built with
  ``make c`` if missing);
- ``perf/crossing_bench.py``, run last in its own process: ours' repeated
  tensor crossings beside a zero-copy floor's, whose ratios the goal line of
  issue 12 on repeated crossings quotes (``crossing.json``).

Each Python system is a host process running perf/peer_adapter.py; the
suite sends every system the same command in turn, in alternating order
(A B, then B A, and so on: no system always goes first; ``rounds`` turns
per workload row) and merges the samples. Start-up and memory rows run
with share_torch=True on every system and with share_torch=False where
the system allows it (the peer does not here: its cell says why). A goal
over several rows ("the worst ratio") counts every row: a row a system
could not measure is named in the goal's line, which then cannot PASS.
It prints a table, writes
``suite.json`` (every number, the machine, the versions), ``suite.md`` (the
full table: mean, std, min, max, p50, p99 per system) and ``suite.png``
(latency against tensor size; calls/s against calls in flight), and
evaluates the goals of issue 5 as PASS / MISS lines. A missed goal never
makes the exit status non-zero; only a broken harness does.

Where ours' host process sees a GPU (torch.cuda.is_available()), the tensor
table has CUDA rows too (torch tensors on device 'cuda', by CUDA IPC; the
floors skip them); elsewhere it prints "CUDA rows skipped: <reason>" and
writes the reason into suite.json ("cuda"). --cuda-only runs the CUDA rows
and the int call alone (tests/gpu/run).

    .venv/bin/python perf/suite.py [--quick|--full|--tiny] [--no-peer] [--cuda-only] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADAPTER = HERE / "peer_adapter.py"
PEER_SPEC = "pyisolate==0.10.2"
PEER_VENV = Path(os.environ.get("PYI_SUITE_PEER_VENV",
                                Path.home() / ".cache" / "pyisolate-suite" / "peer-0.10.2"))
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
IMAGE_8K = (4320, 7680, 3)  # 7680x4320 RGB uint8

SYSTEMS = ["ours", "ours-broker", "peer", "asyncio", "zmq"]
# ours-broker: this project with every host <-> extension message through the
# broker (ExtensionConfig.transport="broker"); "ours" uses the default, the
# local lane (docs/protocol.md, section 10). Both rows where they differ.
LIB_OF = {"ours-broker": "ours"}
LIB_NAMES = {"numpy": "numpy", "torch": "torch", "cuda": "CUDA"}  # in the goals
C_SYSTEMS = ["c-socketpair", "c-zmq"]
FLOOR_FOR_RATIO = ["asyncio", "zmq"]

MODES = {
    # rounds: turns per row; n: samples per turn
    "tiny": dict(rounds=2, small_n=20, small_1m_n=3,
                 sizes=[4 * KiB, 1 * MiB], first_n=2, rep_n=10,
                 depths=[1, 8, 64, 512], tp_calls=1024, tp_rounds=1,
                 nested_n=5, startup_rounds=1, mem_ks=[1, 2],
                 shm_k=2, shm_bytes=4 * MiB, c_bench=False, tensor_budget=0.5,
                 crossing=(2, 30)),
    "quick": dict(rounds=4, small_n=400, small_1m_n=25,
                  sizes=[4 * KiB, 1 * MiB, 64 * MiB, "8k", 1 * GiB],
                  first_n=None, rep_n=60,
                  depths=[1, 8, 64, 512], tp_calls=3000, tp_rounds=2,
                  nested_n=30, startup_rounds=1, mem_ks=[1, 10],
                  shm_k=4, shm_bytes=1 * GiB, c_bench=True, tensor_budget=0.25,
                  crossing=(6, 300)),
    "full": dict(rounds=10, small_n=1000, small_1m_n=100,
                 sizes=[4 * KiB, 1 * MiB, 64 * MiB, "8k", 1 * GiB, 4 * GiB],
                 first_n=None, rep_n=300,
                 depths=[1, 8, 64, 512], tp_calls=10000, tp_rounds=5,
                 nested_n=100, startup_rounds=3, mem_ks=[1, 10, 50],
                 shm_k=10, shm_bytes=1 * GiB, c_bench=True, tensor_budget=3.0,
                 crossing=(12, 400)),
}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def label(size) -> str:
    if size == "8k":
        return "8K image"
    for unit, s in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= s:
            return f"{size // s} {unit}"
    return f"{size} B"


def nbytes(size) -> int:
    return IMAGE_8K[0] * IMAGE_8K[1] * IMAGE_8K[2] if size == "8k" else size


def first_n(size, mode) -> int:
    b = nbytes(size)
    if mode == "tiny":
        return 2
    if b <= MiB:
        return 50
    if b <= 128 * MiB:
        return 4
    return 1


def stats(xs: list[float], scale: float = 1.0) -> dict:
    xs = sorted(x * scale for x in xs)
    n = len(xs)

    def pct(q):
        return xs[min(n - 1, int(q * n))]
    return {"n": n, "mean": statistics.fmean(xs), "std": statistics.pstdev(xs) if n > 1 else 0.0,
            "min": xs[0], "max": xs[-1], "p50": statistics.median(xs), "p99": pct(0.99)}


# --------------------------------------------------------------------------
# the peer's venv


def run_cmd(cmd, timeout=600, env=None) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, (p.stdout + p.stderr)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, f"{type(e).__name__}: {e}"


def peer_env() -> dict:
    """The environment of the peer's processes: $PYTHONPATH without entries
    that hold a pyisolate package (tests/gpu/run puts ours there, and it
    would shadow the peer's own)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        keep = [d for d in env["PYTHONPATH"].split(os.pathsep)
                if d and not (Path(d) / "pyisolate").exists()]
        if keep:
            env["PYTHONPATH"] = os.pathsep.join(keep)
        else:
            del env["PYTHONPATH"]
    return env


def ensure_peer_venv() -> tuple[Path | None, str, dict]:
    """(python of the peer venv, why not, info). uv from the host's venv; the
    host's torch (CPU) reaches the peer through a .pth, never a new torch."""
    info: dict = {"venv": str(PEER_VENV), "spec": PEER_SPEC}
    penv = peer_env()
    py = PEER_VENV / "bin" / "python"
    uv = [sys.executable, "-m", "uv"]
    rc, out = run_cmd(uv + ["--version"])
    if rc != 0:
        uv = ["uv"] if shutil.which("uv") else None
    if uv is None:
        return None, "uv is not available (neither `python -m uv` nor `uv` on PATH)", info
    t0 = time.perf_counter()
    ok = False
    if py.exists():
        rc, out = run_cmd([str(py), "-c", "import pyisolate; print(pyisolate.__version__)"],
                          env=penv)
        ok = rc == 0 and out.strip() == PEER_SPEC.split("==")[1]
    if not ok:
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
        rc, out = run_cmd(uv + ["venv", "-q", "--python", sys.executable, str(PEER_VENV)])
        if rc != 0:
            return None, f"`uv venv` failed: {out.strip()[-400:]}", info
        rc, out = run_cmd(uv + ["pip", "install", "-q", "--python", str(py), PEER_SPEC])
        if rc != 0:
            return None, f"`uv pip install {PEER_SPEC}` failed: {out.strip()[-600:]}", info
        info["installed_now_s"] = time.perf_counter() - t0
    # torch, numpy (and the rest of the host's packages, after the peer's
    # own: its pyisolate, uv, packaging win) through a .pth
    import site
    rc, out = run_cmd([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      env=penv)
    if rc != 0:
        return None, f"the peer venv's python does not run: {out.strip()[-400:]}", info
    peer_site = Path(out.strip())
    host_site = [p for p in site.getsitepackages() if p.startswith(sys.prefix)]
    (peer_site / "_pyi_suite_host_packages.pth").write_text("\n".join(host_site) + "\n")
    rc, out = run_cmd([str(py), "-c", "import pyisolate, torch, numpy; "
                       "print(pyisolate.__file__, torch.__version__)"], env=penv)
    info["check"] = out.strip()[-300:]
    if rc != 0:
        return None, f"the peer venv cannot import pyisolate/torch/numpy: {out.strip()[-400:]}", info
    return py, "", info


def ensure_host_packages(install: bool = True) -> dict:
    """pyzmq (the zmq floor) and matplotlib (the chart) in this venv."""
    got = {}
    for mod, pkg in (("zmq", "pyzmq"), ("matplotlib", "matplotlib")):
        try:
            __import__(mod)
            got[pkg] = "present"
        except ImportError:
            if not install:  # --cuda-only: the GPU machine has no index
                got[pkg] = "missing (not installed with --cuda-only)"
                continue
            log(f"installing {pkg} into {sys.prefix}")
            rc, out = run_cmd([sys.executable, "-m", "pip", "install", "-q", pkg])
            got[pkg] = "installed" if rc == 0 else f"failed: {out.strip()[-300:]}"
    return got


C_ROUNDS = 3  # pyi_bench rounds in each half of the C floors


def c_bench(out_dir: Path, half: int) -> tuple[dict | None, str]:
    """One half of the C floors (pyi_bench --quick, every sample kept)."""
    exe = ROOT / "build" / "perf" / "pyi_bench"
    if not exe.exists():
        log("building build/perf/pyi_bench (make c)")
        rc, out = run_cmd(["make", "-C", str(ROOT), "c"], timeout=900)
        if rc != 0 or not exe.exists():
            return None, f"`make c` failed: {out.strip()[-300:]}"
    path = out_dir / f"pyi_bench.{half}.json"
    rc, out = run_cmd([str(exe), "--quick", "--rounds", str(C_ROUNDS), "--samples",
                       "--json", str(path)], timeout=300)
    if rc != 0 and not path.exists():
        return None, f"pyi_bench failed ({rc}): {out.strip()[-300:]}"
    return json.loads(path.read_text()), ""


# --------------------------------------------------------------------------
# the system processes


class System:
    def __init__(self, name: str, python: str, work: Path, env=None):
        self.name = name
        self.why = ""
        self.info: dict = {}
        self.stderr = open(work / f"{name}.stderr.log", "w")
        self.proc = subprocess.Popen(
            [python, str(ADAPTER), "--lib", LIB_OF.get(name, name), "--work", str(work / name)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env=env, cwd=str(work))
        first = self._read(120)
        if "error" in first:
            self.why = first["error"]
            self.info["traceback"] = first.get("traceback", "")

    def _read(self, timeout: float) -> dict:
        import select
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return {"error": f"no answer within {timeout:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            tail = Path(self.stderr.name).read_text()[-800:]
            return {"error": f"the {self.name} host process exited ({self.proc.poll()}): {tail}"}
        return json.loads(line)

    def cmd(self, timeout: float = 300, **c) -> dict:
        if self.why:
            return {"error": self.why}
        try:
            self.proc.stdin.write(json.dumps(c) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            self.why = f"the {self.name} host process is gone: {e}"
            return {"error": self.why}
        res = self._read(timeout)
        if "error" in res and ("exited" in res["error"] or "no answer" in res["error"]):
            self.why = res["error"]
        return res

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(60)
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# --------------------------------------------------------------------------
# the run


class Suite:
    def __init__(self, args):
        self.args = args
        self.mode = "tiny" if args.tiny else "full" if args.full else "quick"
        self.p = MODES[self.mode]
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="pyi-suite-"))
        self.rows: list[dict] = []
        self.systems: dict[str, System] = {}
        self.excluded: dict[str, str] = {}
        self.meta: dict = {"mode": self.mode}
        self.cuda_only = bool(getattr(args, "cuda_only", False))
        self.cuda_why = "not decided yet"  # '' where the CUDA rows run
        self.turns = 0  # turns taken so far: the order flips at each

    def turn_order(self, items: list) -> list:
        """The systems of one turn: in order, then reversed, and so on
        (A B, B A, A B, ...), so that none always goes first."""
        self.turns += 1
        order = list(items) if self.turns % 2 else list(reversed(items))
        log_ = self.meta.setdefault("turn_orders", [])
        if len(log_) < 1000:
            log_.append([getattr(x, "name", x) for x in order])
        return order

    # -- helpers
    def live(self) -> list[System]:
        return [s for s in self.systems.values() if not s.why]

    def add_row(self, workload, row, unit, per_sys: dict, **extra) -> dict:
        r = {"workload": workload, "row": row, "unit": unit, "systems": per_sys}
        r.update(extra)
        self.rows.append(r)
        return r

    def alternate(self, systems, rounds, make_cmd, timeout=300):
        """A B, B A, ...: each system runs make_cmd(round) in turn, in
        alternating order; samples merged."""
        names = [s.name for s in systems]
        merged: dict[str, dict] = {n: {"samples": []} for n in names}
        for rnd in range(rounds):
            for name in self.turn_order(names):
                s = self.systems[name]
                m = merged[s.name]
                if "skip" in m or "error" in m or s.why:
                    continue
                res = s.cmd(timeout=timeout, **make_cmd(rnd, rounds))
                if s.why:
                    self.restart(s.name)
                if "samples" in res:
                    m["samples"].extend(res["samples"])
                    m.setdefault("int_samples", []).extend(res.get("int_samples", ()))
                    if "what" in res:
                        m["what"] = res["what"]
                elif "skip" in res:
                    m["skip"] = res["skip"]
                else:
                    m["error"] = res.get("error", "?").split("\n")[0][:300]
                    if res.get("traceback"):
                        log(f"[{s.name}] {res['traceback'][-1500:]}")
                for k, v in res.items():
                    if k not in ("samples", "int_samples", "what", "skip", "error", "traceback"):
                        m.setdefault("extra", []).append({k: v})
        return merged

    def finish(self, merged, scale=1e6) -> dict:
        out = {}
        for name, m in merged.items():
            if m.get("samples"):
                st = stats(m["samples"], scale)
                if m.get("int_samples"):  # the int echo paired with each sample
                    st["int_p50"] = statistics.median(m["int_samples"]) * scale
                if "what" in m:
                    st["what"] = m["what"]
                if "error" in m:  # some samples, then an error: keep both
                    st["error"] = m["error"]
                out[name] = st
            elif "skip" in m:
                out[name] = {"skip": m["skip"]}
            else:
                out[name] = {"error": m.get("error", "no samples")}
        return out

    # -- workloads
    def small(self):
        p = self.p
        kinds = (("int", "int"), ("str", "short str"), ("10k", "10 KB str"), ("1m", "1 MB str"))
        if self.cuda_only:  # the baseline of the CUDA rows
            kinds = kinds[:1]
        for kind, lab in kinds:
            n = p["small_1m_n"] if kind == "1m" else p["small_n"]
            log(f"small calls: {lab}")
            m = self.alternate(self.live(), p["rounds"], lambda r, R: dict(
                op="small", value=kind, n=n, warm=5, check=(r == 0)))
            self.add_row("small calls", lab, "us", self.finish(m), value=kind)

    def cuda_reason(self) -> str:
        """Why there are no CUDA rows ('' where there are): ours' host
        process decides (torch.cuda.is_available() there)."""
        ours = self.systems.get("ours")
        if ours is None or ours.why:
            why = self.excluded.get("ours") or (ours.why if ours else "not started")
            return f"ours is not running ({why.split(chr(10))[0][:200]})"
        i = ours.info
        if "torch" not in i:
            return "torch is not importable in ours' host process"
        if not i.get("cuda_available"):
            return (f"torch.cuda.is_available() is False in ours' host process (torch "
                    f"{i['torch']}, built for CUDA {i.get('torch_cuda')})")
        return ""

    def tensors(self):
        p = self.p
        torch_ok = "torch" in self.systems["ours"].info if "ours" in self.systems else False
        libs = ["numpy", "torch"] if torch_ok else ["numpy"]
        if self.cuda_only:
            libs = []
        if not self.cuda_why:
            libs.append("cuda")
        for lib in libs:
            for size in p["sizes"]:
                b = nbytes(size)
                shape = list(IMAGE_8K) if size == "8k" else None
                for case in ("first", "repeated"):
                    n = first_n(size, self.mode) if case == "first" else p["rep_n"]
                    log(f"tensors: {lib} {label(size)} {case}")
                    # check: the first call of the first turn (CUDA: the same
                    # memory comes back, for ours; outside the timing)
                    m = self.alternate(self.live(), min(p["rounds"], 3), lambda r, R: dict(
                        op="tensor", lib=lib, bytes=b, case=case, shape=shape, n=n,
                        budget=p["tensor_budget"], last=(r == R - 1), check=(r == 0),
                        pair_int=(case == "repeated")),
                        timeout=600)
                    self.add_row("tensors", f"{lib} {label(size)} {case}", "us",
                                 self.finish(m), lib=lib, bytes=b, case=case)

    def crossing(self):
        """perf/crossing_bench.py: ours' repeated crossings beside the
        zero-copy floor's, for the goal line (its own process, own turns)."""
        rounds, calls = self.p["crossing"]
        log(f"crossing_bench: {rounds} turns of {calls} calls per row")
        path = self.out / "crossing.json"
        rc, out = run_cmd([sys.executable, str(ROOT / "perf" / "crossing_bench.py"),
                           "--rounds", str(rounds), "--calls", str(calls), "--json", str(path)],
                          timeout=900)
        if rc != 0 or not path.exists():
            self.meta["crossing"] = {"error": out.strip()[-500:]}
            return
        self.meta["crossing"] = json.loads(path.read_text())

    def throughput(self):
        p = self.p
        for depth in p["depths"]:
            calls = max(p["tp_calls"], 2 * depth)
            log(f"throughput: {depth} in flight")
            merged: dict[str, dict] = {s.name: {"samples": []} for s in self.live()}
            for _ in range(p["tp_rounds"]):
                for s in self.turn_order(self.live()):
                    res = s.cmd(op="throughput", depth=depth, calls=calls)
                    if "calls_per_s" in res:
                        merged[s.name]["samples"].append(res["calls_per_s"])
                    else:
                        merged[s.name]["error"] = res.get("error", "?")
            self.add_row("throughput", f"{depth} in flight", "calls/s",
                         self.finish(merged, 1.0), depth=depth, higher_is_better=True)

    def nested(self):
        p = self.p
        log("nested calls")
        m = self.alternate(self.live(), p["rounds"], lambda r, R: dict(
            op="nested", n=p["nested_n"], per_call=10))
        self.add_row("nested calls", "ext -> host singleton -> back", "us", self.finish(m))

    def startup(self):
        """Both ways of share_torch, the same on every system (the peer's
        cell says why it cannot run without)."""
        p = self.p
        for torch in (True, False):
            got: dict[str, dict] = {}
            for _ in range(p["startup_rounds"]):
                for s in self.turn_order(self.live()):
                    log(f"start-up: {s.name}, share_torch={torch}")
                    res = s.cmd(op="startup", torch=torch, timeout=600)
                    g = got.setdefault(s.name, {})
                    for case in ("venv_create", "fresh", "existing"):
                        if case in res:
                            g.setdefault(case, []).append(res[case])
                        elif "skip" in res:
                            g[case] = {"skip": res["skip"]}
                        elif "error" in res:
                            g[case] = {"error": res["error"]}
                            if res.get("traceback"):
                                log(f"[{s.name}] {res['traceback'][-1500:]}")
            for case, lab in (("venv_create", "venv creation alone"),
                              ("fresh", "load to first call, fresh venv (uv cache warm)"),
                              ("existing", "load to first call, existing venv")):
                per = {}
                for name, g in got.items():
                    v = g.get(case)
                    per[name] = stats(v, 1e3) if isinstance(v, list) else (v or {"error": "none"})
                self.add_row("start-up", f"{lab}, share_torch={torch}", "ms", per, case=case,
                             share_torch=torch)

    def memory(self):
        """Both ways of share_torch, the same on every system (the peer's
        cell says why it cannot run without)."""
        p = self.p
        for torch in (True, False):
            for k in p["mem_ks"]:
                per_host, per_ext, per_first = {}, {}, {}
                for s in self.turn_order(self.live()):
                    log(f"memory: {s.name}, {k} extensions, share_torch={torch}")
                    res = s.cmd(op="memory", k=k, torch=torch, timeout=900)
                    if "host_rss_growth_per_ext" in res:
                        per_host[s.name] = stats([res["host_rss_growth_per_ext"]], 1 / MiB)
                        per_ext[s.name] = stats(res["ext_rss"], 1 / MiB)
                        per_first[s.name] = stats([res["host_rss_manager_and_first_ext"]],
                                                  1 / MiB)
                    else:
                        bad = ({"skip": res["skip"]} if "skip" in res
                               else {"error": res.get("error")})
                        per_host[s.name] = per_ext[s.name] = per_first[s.name] = bad
                how = f"share_torch={torch}"
                if k == p["mem_ks"][0]:
                    self.add_row("memory", f"host RSS growth: manager + first extension, {how}",
                                 "MiB", per_first, k=1, share_torch=torch)
                self.add_row("memory", f"host RSS growth per extension, {k} loaded, {how}",
                             "MiB", per_host, k=k, share_torch=torch)
                self.add_row("memory", f"each extension's RSS, {k} loaded, {how}", "MiB",
                             per_ext, k=k, share_torch=torch)
        k, b = p["shm_k"], p["shm_bytes"]
        per = {}
        for s in self.turn_order(self.live()):
            if "torch" not in s.info:
                per[s.name] = {"skip": "torch is not importable"}
                continue
            log(f"memory: {s.name}, /dev/shm after a {label(b)} tensor to {k} extensions")
            res = s.cmd(op="shm", k=k, bytes=b, timeout=900)
            if "shm_delta" in res:
                per[s.name] = stats([res["shm_delta"]], 1 / MiB)
                per[s.name]["copies"] = res["shm_delta"] / b
            else:
                per[s.name] = {"skip": res["skip"]} if "skip" in res else {
                    "error": res.get("error")}
        self.add_row("memory", f"/dev/shm used after a {label(b)} tensor to {k} extensions",
                     "MiB", per, k=k, bytes=b)

    def c_rows(self, halves: list[dict]):
        """The C floors' cells: the samples of both halves of pyi_bench
        (before and after the Python rows) merged; throughput: one sample
        (calls/s) per half."""
        lat: dict = {}
        tp: dict = {}
        for data in halves:
            for d in data.get("latency", []):
                lat.setdefault((d["system"], d["size"]), []).extend(
                    d.get("samples_us") or [d["p50_us"]])
            for d in data.get("throughput", []):
                tp.setdefault((d["system"], d["in_flight"]), []).append(d["calls_per_s"])
        what = f"pyi_bench, {len(halves)} half run(s) merged"
        csys = {"c-socketpair": "socketpair", "c-zmq": "zmq-direct"}
        # small calls: int/short str ~ 16 B, 1 MB str ~ 1 MiB (pyi_bench's sizes)
        for r in self.rows:
            size = None
            if r["workload"] == "small calls":
                size = {"int": 16, "str": 16, "1m": MiB}.get(r["value"])
            for cs, src in csys.items():
                if r["workload"] == "throughput":
                    v = tp.get((src, r["depth"]))
                    r["systems"][cs] = (dict(stats(v), what=what) if v else
                                        {"skip": "not measured by pyi_bench"})
                elif size is not None and (src, size) in lat:
                    r["systems"][cs] = dict(stats(lat[(src, size)]),
                                            what=f"{what}, {size} B payload")

    # -- the whole run
    def run(self) -> int:
        a, p = self.args, self.p
        t_start = time.time()
        self.meta.update(self.machine())
        self.meta["cuda_only"] = self.cuda_only
        self.meta["host_packages"] = ensure_host_packages(install=not self.cuda_only)
        peer_py = None
        if a.no_peer:
            self.excluded["peer"] = "--no-peer"
        else:
            log(f"peer: preparing {PEER_VENV}")
            try:
                peer_py, why, info = ensure_peer_venv()
            except Exception as e:  # say why, go on without it
                peer_py, why, info = None, f"preparing its venv failed: {type(e).__name__}: {e}", {}
            self.meta["peer_venv"] = info
            if peer_py is None:
                self.excluded["peer"] = why
        cdata: list[dict] = []
        if self.cuda_only:
            self.excluded["c-socketpair"] = self.excluded["c-zmq"] = "not run with --cuda-only"
        elif p["c_bench"]:
            # The C floors take their turns too: half before the Python
            # rows, half after them.
            self.c_half(cdata, 1)
        else:
            self.excluded["c-socketpair"] = self.excluded["c-zmq"] = "not run in --tiny"
        self.peer_py = peer_py
        for name in SYSTEMS:
            if name in self.excluded:
                continue
            s = self.spawn(name)
            if s.why:
                self.excluded[name] = f"did not start: {s.why}"
                log(f"{name} did not start: {s.why}")
                continue
            self.systems[name] = s
        self.cuda_why = self.cuda_reason()
        if self.cuda_why:
            self.meta["cuda"] = {"skipped": self.cuda_why}
        else:
            i = self.systems["ours"].info
            self.meta["cuda"] = {"device": i.get("cuda_device"), "torch": i.get("torch"),
                                 "torch_cuda": i.get("torch_cuda")}
            log(f"CUDA rows: {i.get('cuda_device')} (torch {i.get('torch')})")
        steps = (self.small, self.throughput, self.nested, self.startup, self.memory,
                 self.tensors, self.crossing)
        if self.cuda_only:
            steps = (self.small, self.tensors)
        try:
            # tensors last: a host process that dies there (the peer's has,
            # see the notes) is restarted, but loses nothing else
            for step in steps:
                t0 = time.time()
                step()
                self.meta.setdefault("step_seconds", {})[step.__name__] = time.time() - t0
        finally:
            for s in self.systems.values():
                self.meta.setdefault("versions", {})[s.name] = s.info
                if s.why:
                    self.excluded.setdefault(s.name, "failed during the run: "
                                             + s.why.split("\n")[0][:300])
                s.close()
        if cdata:
            self.c_half(cdata, 2)
            self.c_rows(cdata)
        self.meta["run_seconds"] = time.time() - t_start
        self.report()
        shutil.rmtree(self.work, ignore_errors=True)
        return 0

    def c_half(self, cdata: list[dict], half: int) -> None:
        log(f"C floors: pyi_bench --quick, half {half} of 2")
        data, why = c_bench(self.out, half)
        if data is None:
            if half == 1:
                self.excluded["c-socketpair"] = self.excluded["c-zmq"] = why
            else:
                self.meta["c_floors_note"] = f"only the first half ran; the second: {why}"
            return
        cdata.append(data)
        self.meta.setdefault("pyi_bench", []).append(
            {k: data.get(k) for k in ("machine", "libzmq", "cpus", "run_seconds", "goals")})

    def spawn(self, name: str) -> System:
        py, env = sys.executable, dict(os.environ)
        if name == "peer":
            py, env = str(self.peer_py), peer_env()
            env["PATH"] = f"{PEER_VENV / 'bin'}:{env.get('PATH', '')}"  # its uv
            env["PYISOLATE_UV_CACHE_DIR"] = str(PEER_VENV.parent / "uv-cache")
        env["PYISOLATE_TRANSPORT"] = "broker" if name == "ours-broker" else "lane"
        log(f"starting {name}")
        s = System(name, py, self.work, env)
        if not s.why:
            res = s.cmd(op="setup", torch=True, timeout=300)
            if "error" in res:
                s.why = res["error"]
                log(f"[{name}] {res.get('traceback', '')[-1500:]}")
            else:
                s.info = res
        if s.why:
            s.close()
        return s

    def restart(self, name: str) -> bool:
        """A host process that died mid-run: note it, start a new one."""
        old = self.systems[name]
        self.meta.setdefault("restarts", []).append({"system": name, "why": old.why[:2000]})
        log(f"{name}: host process lost ({old.why[:300]}); restarting it")
        old.close()
        new = self.spawn(name)
        if new.why:
            return False
        self.systems[name] = new
        return True

    def machine(self) -> dict:
        m = {"platform": platform.platform(), "machine": platform.machine(),
             "cpus": os.cpu_count(), "python": sys.version.split()[0],
             "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    m["cpu"] = line.split(":", 1)[1].strip()
                    break
            for line in open("/proc/meminfo"):
                if line.startswith("MemTotal"):
                    m["mem_total_kib"] = int(line.split()[1])
            st = os.statvfs("/dev/shm")
            m["dev_shm_bytes"] = st.f_blocks * st.f_frsize
        except OSError:
            pass
        return m

    # -- the report
    def columns(self) -> list[str]:
        cols = [n for n in SYSTEMS if n in self.systems or n in self.excluded and n != "peer"]
        cols = [n for n in SYSTEMS if n in self.systems]
        return cols + [c for c in C_SYSTEMS if c not in self.excluded]

    @staticmethod
    def ratio(r, num, den):
        a, b = r["systems"].get(num, {}), r["systems"].get(den, {})
        if "p50" not in a or "p50" not in b or not b["p50"]:
            return None
        return a["p50"] / b["p50"]

    @staticmethod
    def cell_why(r, name) -> str:
        """Why row r has no number for system name."""
        c = r["systems"].get(name)
        if c is None:
            return f"{name} not measured"
        if "skip" in c:
            return f"{name}: {str(c['skip'])[:120]}"
        if "error" in c:
            return f"{name}: ERROR {str(c['error']).splitlines()[0][:120] if c['error'] else ''}"
        return f"{name}: no p50"

    def over_rows(self, rows, num, den=None):
        """(row, ratio or value) for each row with a number, and the rows
        without one, each with why: nothing is left out unsaid."""
        got, missing = [], []
        for r in rows:
            q = (self.ratio(r, num, den) if den else
                 r["systems"].get(num, {}).get("p50"))
            if q is not None:
                got.append((r["row"], q))
            else:
                gone = [n for n in (num, den) if n and "p50" not in r["systems"].get(n, {})]
                missing.append(f"{r['row']} ({'; '.join(self.cell_why(r, n) for n in gone)})")
        return got, missing

    def crossing_floor(self, lib: str) -> str:
        """The goal line's context: the same ratio for the zero-copy floor
        and for ours in crossing_bench's own turns (docs in that file)."""
        c = self.meta.get("crossing")
        if not c:
            return ""
        if "error" in c:
            return f"; crossing_bench failed: {c['error'][-200:]}"
        rows = {k: v for k, v in c["rows"].items() if k.startswith(lib + " ")}
        if not rows:
            return ""

        def worst(name):
            return max(v[name]["median_ratio"] for v in rows.values())

        return (f"; crossing_bench: ours worst {worst('ours'):.2f}x, the zero-copy floor's "
                f"{worst('zero-copy floor'):.2f}x (it makes the extension's tensor object, names it "
                f"back and does nothing else)")

    def goals(self) -> list[dict]:
        g = []

        def row(workload, pred):
            return [r for r in self.rows if r["workload"] == workload and pred(r)]

        def add(goal, ok, measured, detail):
            g.append({"goal": goal, "pass": ok, "measured": measured, "detail": detail})

        def worst(goal, rows, num, den, better, limit, text):
            """A goal over rows: the worst of them must meet limit. Rows
            without a number are named; with any, it cannot PASS."""
            absent = [n for n in (num, den) if n and n in self.excluded]
            if absent:  # a system left out of the whole run
                add(goal, None, None, "; ".join(f"{n} not measured: {self.excluded[n]}"
                                                for n in absent))
                return
            got, missing = self.over_rows(rows, num, den)
            pick = max if better == "low" else min
            note = f"; NOT MEASURED: {', '.join(missing)}" if missing else ""
            if not got:
                add(goal, None, None, ("nothing measured" + note) if missing else
                    f"{den or num} not measured")
                return
            w = pick(got, key=lambda x: x[1])
            ok = w[1] <= limit if better == "low" else w[1] >= limit
            if missing and ok:
                ok = None  # incomplete: cannot pass
            add(goal, ok, w[1], text(w) + ", ".join(f"{k} {v:.2f}x" for k, v in got) + note)

        small = row("small calls", lambda r: True)
        worst("small-call p50 <= 1/3 of the peer's", small, "ours", "peer", "low", 1 / 3,
              lambda w: f"worst ours/peer {w[1]:.2f}x ({w[0]}); limit 0.33x; ")
        worst("small-call p50 within 2x of the asyncio floor", small, "ours", "asyncio", "low",
              2.0, lambda w: f"worst ours/asyncio {w[1]:.2f}x ({w[0]}); limit 2x; ")
        for lib in ("numpy", "torch", "cuda"):
            flat = f"repeated {LIB_NAMES[lib]} crossing flat: largest within 2x of smallest"
            fast = f"repeated {LIB_NAMES[lib]} crossing >= 10x faster than the peer from 64 MiB"
            if lib == "cuda" and self.cuda_why:
                add(flat, None, None, "no CUDA rows (the reason is above, and in \"cuda\")")
                add(fast, None, None, "no CUDA rows (the reason is above, and in \"cuda\")")
                continue
            rep = sorted(row("tensors", lambda r: r["lib"] == lib and r["case"] == "repeated"),
                         key=lambda r: r["bytes"])
            got, missing = self.over_rows(rep, "ours")
            note = f"; NOT MEASURED: {', '.join(missing)}" if missing else ""
            if len(rep) >= 2 and not missing:
                lo, hi = rep[0], rep[-1]
                q = hi["systems"]["ours"]["p50"] / lo["systems"]["ours"]["p50"]
                extra = "" if hi["bytes"] >= 4 * GiB else " (4 GiB only in --full)"
                add(flat, q <= 2.0, q, f"{hi['row']} / {lo['row']} = {q:.2f}x; limit 2x{extra}")
            elif len(rep) >= 2:
                add(flat, None, None, "ours has no number for every row" + note)
            elif lib == "cuda":
                add(flat, None, None, "fewer than two CUDA rows")
            big = [r for r in rep if r["bytes"] >= 64 * MiB]
            if big:
                worst(fast, big, "peer", "ours", "high", 10,
                      lambda w: f"worst peer/ours {w[1]:.1f}x ({w[0]}); minimum 10x; ")
            elif lib == "cuda":
                add(fast, None, None, "no CUDA row of 64 MiB or more for ours in this mode"
                    + (" (--tiny stops at 1 MiB)" if self.mode == "tiny" else ""))
        tp = row("throughput", lambda r: r["depth"] == 64)
        if tp:
            worst("throughput at 64 in flight >= 3x the peer's", tp, "ours", "peer", "high", 3,
                  lambda w: f"ours/peer {w[1]:.2f}x; minimum 3x; ")
        # Like with like: share_torch=True on both sides (the peer runs no other way here).
        st = row("start-up", lambda r: r["case"] == "existing" and r.get("share_torch"))
        if st:
            worst("start-up with an existing venv <= half the peer's (share_torch=True on both)",
                  st, "ours", "peer", "low", 0.5,
                  lambda w: f"ours/peer {w[1]:.2f}x; limit 0.5x; ")
        self.lane_goals(row, add, worst)
        mem = row("memory", lambda r: r["row"].startswith("host RSS growth per extension"))
        if mem:
            got, missing = self.over_rows(mem, "ours")
            note = f"; NOT MEASURED: {', '.join(missing)}" if missing else ""
            if got:
                w = max(got, key=lambda v: v[1])
                ok = w[1] * MiB <= 15e6
                add("host RSS <= 15 MB per loaded extension", None if missing and ok else ok,
                    w[1], f"worst {w[1]:.1f} MiB ({w[0]}); limit 15 MB (14.3 MiB){note}")
            else:
                add("host RSS <= 15 MB per loaded extension", None, None, "nothing measured" + note)
        return g

    def lane_goals(self, row, add, worst) -> None:
        """The goals of issue 12 (the local lane), each with its ratio."""
        small = row("small calls", lambda r: True)
        worst("[12] small-call p50 <= 1.5x the asyncio floor", small, "ours", "asyncio", "low",
              1.5, lambda w: f"worst ours/asyncio {w[1]:.2f}x ({w[0]}); limit 1.5x; ")
        got = []
        for r in small:
            a, b = r["systems"].get("ours", {}), r["systems"].get("asyncio", {})
            if a.get("p99") and b.get("p99"):
                got.append((r["row"], a["p99"] / b["p99"]))
        if got:
            w = max(got, key=lambda v: v[1])
            add("[12] small-call p99 <= 2x the asyncio floor's p99", w[1] <= 2.0, w[1],
                f"worst {w[1]:.2f}x ({w[0]}); limit 2x; "
                + ", ".join(f"{k} {v:.2f}x" for k, v in got))
        else:
            add("[12] small-call p99 <= 2x the asyncio floor's p99", None, None,
                "ours or asyncio has no p99")
        base = next((r for r in small if r.get("value") == "int"), None)
        nested = row("nested calls", lambda r: True)
        if base and nested and base["systems"].get("asyncio", {}).get("p50") \
                and nested[0]["systems"].get("ours", {}).get("p50"):
            q = nested[0]["systems"]["ours"]["p50"] / base["systems"]["asyncio"]["p50"]
            add("[12] nested call (ext -> host singleton -> back) <= 2x the floor", q <= 2.0, q,
                f"ours nested p50 / asyncio int p50 = {q:.2f}x; limit 2x")
        else:
            add("[12] nested call (ext -> host singleton -> back) <= 2x the floor", None, None,
                "ours' nested row or the asyncio int row not measured")
        tp = row("throughput", lambda r: r["depth"] == 64)
        if tp:
            worst("[12] throughput at 64 in flight >= the asyncio floor's", tp, "ours",
                  "asyncio", "high", 1.0, lambda w: f"ours/asyncio {w[1]:.2f}x; minimum 1x; ")
            worst("[12] throughput at 64 in flight >= 5x the peer's", tp, "ours", "peer", "high",
                  5.0, lambda w: f"ours/peer {w[1]:.2f}x; minimum 5x; ")
        ours_int = base["systems"].get("ours", {}).get("p50") if base else None
        for lib in ("numpy", "torch"):
            goal = (f"[12] repeated {LIB_NAMES[lib]} crossing <= 1.2x a small call, "
                    "every size 4 KiB - 1 GiB")
            rep = [r for r in row("tensors", lambda r: r["lib"] == lib
                                  and r["case"] == "repeated")]
            if not rep or not ours_int:
                add(goal, None, None, "no rows (or no int call) for ours")
                continue
            # Each row over the int echo timed after each of its samples (the
            # same turns); the small-call row's p50 where a row has none.
            got = [(r["row"], r["systems"]["ours"]["p50"]
                    / r["systems"]["ours"].get("int_p50", ours_int))
                   for r in rep if r["systems"].get("ours", {}).get("p50")]
            missing = [r["row"] for r in rep if not r["systems"].get("ours", {}).get("p50")]
            w = max(got, key=lambda v: v[1]) if got else None
            ok = None if (missing or w is None) else w[1] <= 1.2
            add(goal, ok, w[1] if w else None,
                (f"worst {w[1]:.2f}x ({w[0]}); limit 1.2x; over the int echo paired with "
                 "each sample; " if w else "")
                + ", ".join(f"{k} {v:.2f}x" for k, v in got)
                + (f"; NOT MEASURED: {', '.join(missing)}" if missing else "")
                + self.crossing_floor(lib))
        first = row("tensors", lambda r: r["lib"] == "torch" and r["case"] == "first"
                    and r["bytes"] == GiB)
        if first:
            worst("[12] first crossing of a fresh 1 GiB torch tensor <= the peer's", first,
                  "ours", "peer", "low", 1.0, lambda w: f"ours/peer {w[1]:.2f}x; limit 1x; ")
        else:
            add("[12] first crossing of a fresh 1 GiB torch tensor <= the peer's", None, None,
                "no 1 GiB torch row in this mode")

    def fmt(self, v, unit) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if unit == "calls/s":
            return f"{v:,.0f}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"

    def report(self) -> None:
        cols = self.columns()
        goals = self.goals()
        ratio_cols = []
        if "peer" in self.systems:
            ratio_cols.append(("ours/peer", "ours", "peer"))
        for f in FLOOR_FOR_RATIO:
            if f in self.systems:
                ratio_cols.append((f"ours/{f}", "ours", f))
        if "c-socketpair" in cols:
            ratio_cols.append(("ours/c-sock", "ours", "c-socketpair"))
        if "ours-broker" in self.systems:
            ratio_cols.append(("lane/broker", "ours", "ours-broker"))
        base = next((r for r in self.rows if r["workload"] == "small calls"
                     and r.get("value") == "int"), None)
        for r in self.rows:
            r["ratios_p50"] = {lab: self.ratio(r, a, b) for lab, a, b in ratio_cols}
            if base and r["workload"] == "tensors" and r["lib"] == "cuda":
                # the int call of the same run is the CUDA rows' baseline
                r["over_int_p50"] = {}
                for c in cols:
                    a, b = r["systems"].get(c, {}), base["systems"].get(c, {})
                    if a.get("p50") is not None and b.get("p50"):
                        r["over_int_p50"][c] = a["p50"] / b["p50"]

        # console: p50 (p99) per system
        head = f"{'workload':14} {'row':62} {'unit':7}" + "".join(f" {c:>20}" for c in cols) \
            + "".join(f" {lab:>11}" for lab, _, _ in ratio_cols)
        lines = [f"pyisolate suite, {self.mode} mode: p50 (p99) per system; ratios of p50",
                 head, "-" * len(head)]
        for r in self.rows:
            cells = []
            for c in cols:
                s = r["systems"].get(c)
                if s is None:
                    cells.append("-")
                elif "p50" in s and "error" in s:
                    cells.append(f"{self.fmt(s['p50'], r['unit'])} !err")
                elif "p50" in s:
                    if s.get("n", 0) > 1 and not math.isnan(s.get("p99", float("nan"))):
                        cells.append(f"{self.fmt(s['p50'], r['unit'])} ({self.fmt(s['p99'], r['unit'])})")
                    else:
                        cells.append(self.fmt(s["p50"], r["unit"]))
                else:
                    cells.append("skip" if "skip" in s else "ERROR")
            rat = [r["ratios_p50"][lab] for lab, _, _ in ratio_cols]
            lines.append(f"{r['workload'][:14]:14} {r['row'][:62]:62} {r['unit']:7}"
                         + "".join(f" {c:>20}" for c in cells)
                         + "".join(f" {('-' if x is None else f'{x:.2f}x'):>11}" for x in rat))
        notes = []
        for r in self.rows:
            for c, s in r["systems"].items():
                if "skip" in s or "error" in s:
                    why = s.get("skip") or "ERROR " + str(s.get("error")).split("\n")[0][:300]
                    notes.append(f"  {r['row']} / {c}: {why}")
        lines.append("")
        for rs in self.meta.get("restarts", []):
            lines.append(f"restarted {rs['system']}'s host process after: "
                         + rs["why"].split("\n")[0][:300])
        if self.meta.get("c_floors_note"):
            lines.append(f"C floors: {self.meta['c_floors_note']}")
        if self.excluded:
            lines.append("systems not measured:")
            for k, v in self.excluded.items():
                lines.append(f"  {k}: {v}")
        if self.cuda_why:
            lines.append(f"CUDA rows skipped: {self.cuda_why}")
        else:
            lines.append(f"CUDA rows: {self.meta['cuda'].get('device')}; p50 over the int "
                         "call's p50 of the same system:")
            for r in self.rows:
                if r["workload"] == "tensors" and r["lib"] == "cuda":
                    q = r.get("over_int_p50", {})
                    lines.append(f"  {r['row']}: " + (", ".join(
                        f"{k} {v:.2f}x" for k, v in q.items()) or "-"))
        if notes:
            lines.append("skipped cells:")
            seen = set()
            for n in notes:
                key = n.split(": ", 1)[1][:80]
                if key in seen and len(notes) > 12:
                    continue
                seen.add(key)
                lines.append(n)
        lines.append("")
        lines.append("goals (issue 5):")
        for g in goals:
            tag = "PASS" if g["pass"] else ("MISS" if g["pass"] is False else "N/A ")
            lines.append(f"  {tag} {g['goal']}: {g['detail']}")
        text = "\n".join(lines)
        print(text, flush=True)

        # markdown: the full table
        md = [f"# pyisolate suite ({self.mode})", "",
              f"{self.meta.get('cpu', '')}, {self.meta.get('cpus')} CPUs, "
              f"{self.meta.get('platform')}, {self.meta.get('date_utc')}", ""]
        md.append("| workload | row | unit | stat | " + " | ".join(cols) + " | "
                  + " | ".join(l for l, _, _ in ratio_cols) + " |")
        md.append("|" + "---|" * (4 + len(cols) + len(ratio_cols)))
        for r in self.rows:
            for i, st in enumerate(("mean", "std", "min", "max", "p50", "p99")):
                cells = []
                for c in cols:
                    s = r["systems"].get(c, {})
                    cells.append(self.fmt(s.get(st), r["unit"]) if st in s else
                                 ("skip" if "skip" in s else "-"))
                rat = [r["ratios_p50"][l] for l, _, _ in ratio_cols] if st == "p50" else []
                md.append(f"| {r['workload'] if i == 0 else ''} | {r['row'] if i == 0 else ''} | "
                          f"{r['unit']} | {st} | " + " | ".join(cells) + " | "
                          + " | ".join(("-" if x is None else f"{x:.2f}x") for x in rat)
                          + (" |" * (len(ratio_cols) - len(rat))) + " |")
        md += ["", "```", text, "```", ""]
        (self.out / "suite.md").write_text("\n".join(md))

        data = {"meta": self.meta, "excluded": self.excluded, "columns": cols,
                "rows": self.rows, "goals": goals, "cuda": self.meta.get("cuda")}
        (self.out / "suite.json").write_text(json.dumps(data, indent=1, default=str))
        self.chart(cols)
        log(f"wrote {self.out / 'suite.json'}, {self.out / 'suite.md'}, {self.out / 'suite.png'}")

    def chart(self, cols) -> None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            self.meta["chart"] = f"no matplotlib: {e}"
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        colors = {"ours": "C0", "ours-broker": "C4", "peer": "C3", "asyncio": "C2", "zmq": "C1"}
        for sysname in [c for c in cols if c in colors]:
            for lib, style in (("torch", "-"), ("numpy", "--"), ("cuda", "-.")):
                for case, marker in (("repeated", "o"), ("first", "x")):
                    pts = sorted((r["bytes"], r["systems"][sysname]["p50"]) for r in self.rows
                                 if r["workload"] == "tensors" and r["lib"] == lib
                                 and r["case"] == case and "p50" in r["systems"].get(sysname, {}))
                    if sysname in ("asyncio", "zmq") and case == "first":
                        continue  # the floors' first and repeated are the same copy
                    if pts:
                        ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker,
                                 color=colors[sysname], label=f"{sysname} {lib} {case}"
                                 if sysname not in ("asyncio", "zmq") else f"{sysname} {lib} (copy)")
            pts = sorted((r["depth"], r["systems"][sysname]["p50"]) for r in self.rows
                         if r["workload"] == "throughput" and "p50" in r["systems"].get(sysname, {}))
            if pts:
                ax2.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colors[sysname],
                         label=sysname)
        for c, col in (("c-zmq", "C4"), ("c-socketpair", "C5")):
            pts = sorted((r["depth"], r["systems"][c]["p50"]) for r in self.rows
                         if r["workload"] == "throughput" and "p50" in r["systems"].get(c, {}))
            if pts:
                ax2.plot([p[0] for p in pts], [p[1] for p in pts], ":o", color=col, label=c)
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        ax1.set_xlabel("tensor size (bytes)")
        ax1.set_ylabel("round trip p50 (us)")
        ax1.set_title("latency against tensor size")
        if ax1.get_legend_handles_labels()[0]:
            ax1.legend(fontsize=6)
        ax1.grid(True, which="both", alpha=0.3)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("calls in flight")
        ax2.set_ylabel("calls/s")
        ax2.set_title("throughput against calls in flight")
        if ax2.get_legend_handles_labels()[0]:
            ax2.legend(fontsize=7)
        ax2.grid(True, which="both", alpha=0.3)
        fig.suptitle(f"pyisolate suite ({self.mode}), {self.meta.get('cpus')} CPUs")
        fig.tight_layout()
        fig.savefig(self.out / "suite.png", dpi=110)
        plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="under 3 minutes (the default)")
    g.add_argument("--full", action="store_true", help="more rounds, 4 GiB, 50 extensions")
    g.add_argument("--tiny", action="store_true", help="a few iterations, small sizes, for tests")
    ap.add_argument("--no-peer", action="store_true", help="leave the peer out")
    ap.add_argument("--cuda-only", action="store_true",
                    help="only the CUDA tensor rows and the int call (their baseline), for "
                    "tests/gpu/run; prints 'CUDA rows skipped: <reason>' and exits 0 without CUDA")
    ap.add_argument("--out", default="suite-out", help="where to write suite.json/.md/.png")
    args = ap.parse_args()
    return Suite(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
