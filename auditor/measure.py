"""Measured peak memory and latency: the model is run by onnxruntime in a child process with limits."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from auditor.errors import AuditError

__all__ = ["InputSpec", "Measurement", "ProfileError", "measure"]

# Run as a script path, not as ``python -m auditor._measure_child``: ``-m`` would first import
# auditor/__init__.py and with it the whole audit pipeline (onnx, networkx, jinja2...), which adds
# tens of MiB to the child's baseline and a second to its start-up, and which the child never uses.
# The child then imports only the standard library, numpy and onnxruntime.
_CHILD = Path(__file__).with_name("_measure_child.py")

_MIB = 1 << 20
# How often the watchdog reads the child's RSS: a model filling memory at a few GB/s can overshoot
# the cap by roughly this interval's worth before it is stopped.
_WATCH_INTERVAL_S = 0.02
_DEVICES = ("cpu", "cuda")


class ProfileError(AuditError):
    """Measuring failed; slug ``profile-failed``, ``profile-timeout``, ``profile-memory`` or ``profile-unavailable``."""


@dataclass(frozen=True)
class InputSpec:
    """One model input to generate: its name, numpy dtype name, concrete shape and integer range."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16", "int64", "int32", "bool", ...
    shape: tuple[int, ...]
    low: int = 0  # integer inputs: values drawn uniformly from [low, high)
    high: int = 2  # (the caller passes the vocabulary size for token-id inputs)


@dataclass(frozen=True)
class Measurement:
    """Memory and latency of one model measured in a child process; all bytes are over the baseline."""

    device: str  # "cpu" or "cuda"
    provider: str  # the onnxruntime execution provider that ran it
    runs: int  # timed runs after warm-up
    warmup: int
    baseline_bytes: int  # process RSS before the session was created (inputs already built)
    session_bytes: int  # RSS after session creation, over the baseline
    creation_peak_bytes: int  # peak RSS during session creation, over the baseline
    first_run_peak_bytes: int  # peak RSS during the first run (a warm-up one if any), over the baseline
    # CPU: peak RSS over creation, warm-up and timed runs, over the baseline. CUDA: the device
    # memory the process held at its peak (CUDA context and onnxruntime's arena included).
    peak_bytes: int
    latencies_ms: tuple[float, ...]  # one per timed run

    @property
    def median_ms(self) -> float:
        """Median latency of the timed runs."""
        return _quantile(self.latencies_ms, 0.5)

    @property
    def p90_ms(self) -> float:
        """90th-percentile latency of the timed runs (linear interpolation, as numpy's default)."""
        return _quantile(self.latencies_ms, 0.9)

    @property
    def spread_ms(self) -> float:
        """Slowest minus fastest timed run."""
        return max(self.latencies_ms) - min(self.latencies_ms)


def measure(
    model_path: str | os.PathLike[str],
    inputs: Sequence[InputSpec],
    device: str = "cpu",
    runs: int = 10,
    warmup: int = 2,
    timeout_s: float = 300.0,
    memory_cap_bytes: int | None = None,
    threads: int | None = None,
) -> Measurement:
    """Run the model in a child process with a time and memory limit; raises ProfileError with a one-line message."""
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, not {device!r}")
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not Path("/proc/self/status").is_file():
        raise ProfileError("profile-unavailable", "measuring memory needs Linux (/proc); this system has none")
    if importlib.util.find_spec("onnxruntime") is None:
        raise ProfileError("profile-unavailable", "measuring needs onnxruntime: pip install 'auditor[profile]'")
    path = Path(model_path).resolve()
    if not path.is_file():
        raise ProfileError("profile-failed", f"cannot measure {path}: no such file")
    cap = memory_cap_bytes if memory_cap_bytes is not None else _default_cap()
    request = {
        "model": str(path),
        "inputs": [
            {"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "low": s.low, "high": s.high} for s in inputs
        ],
        "device": device,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
    }
    out, err, returncode, timed_out, over_cap = run_limited(_CHILD, json.dumps(request).encode(), timeout_s, cap)
    if over_cap is not None:
        raise ProfileError(
            "profile-memory",
            f"measuring {path.name} exceeded the memory cap of {cap // _MIB} MiB "
            f"(the process reached {over_cap // _MIB} MiB) and was stopped",
        )
    if timed_out:
        raise ProfileError(
            "profile-timeout", f"measuring {path.name} did not finish within {timeout_s:g} s and was stopped"
        )
    result = _last_json(out)
    if result is None:
        raise ProfileError("profile-failed", f"measuring {path.name} failed: {crash_reason(returncode, err)}")
    if not result.get("ok"):
        slug = str(result.get("slug", "profile-failed"))
        raise ProfileError(slug, str(result.get("message", "the measuring process gave no reason")))
    return Measurement(
        device=device,
        provider=str(result["provider"]),
        runs=runs,
        warmup=warmup,
        baseline_bytes=int(result["baseline_bytes"]),
        session_bytes=int(result["session_bytes"]),
        creation_peak_bytes=int(result["creation_peak_bytes"]),
        first_run_peak_bytes=int(result["first_run_peak_bytes"]),
        peak_bytes=int(result["peak_bytes"]),
        latencies_ms=tuple(float(t) for t in result["latencies_ms"]),
    )


def run_limited(script: Path, request: bytes, timeout_s: float, cap: int) -> tuple[bytes, bytes, int, bool, int | None]:
    """Run ``script`` in a child process fed ``request`` on stdin, to completion or until stopped by
    the time limit or the memory cap: (stdout, stderr, returncode, timed out, RSS over cap). Shared
    by measuring and by the torch front end's export."""
    # Its own session (and so process group): stopping it kills anything it started too, and a
    # Ctrl-C in the terminal reaches only the parent, which then stops the child below.
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    watchdog = _Watchdog(proc.pid, cap)
    watchdog.start()
    timed_out = False
    try:
        try:
            # communicate() feeds stdin and drains both pipes together, so neither side can block
            # on a full pipe buffer.
            out, err = proc.communicate(request, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
    finally:
        watchdog.stop()
        if proc.returncode is None:  # interrupted (KeyboardInterrupt...): never leave it running
            _kill_group(proc)
            proc.wait()
    return out, err, proc.returncode, timed_out, watchdog.over_cap


class _Watchdog:
    """A thread reading the child's RSS every few ms and killing its group above the cap."""

    def __init__(self, pid: int, cap: int) -> None:
        self._pid = pid
        self._cap = cap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="measure-watchdog", daemon=True)
        self.over_cap: int | None = None  # the RSS seen when it was stopped for exceeding the cap

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        status = f"/proc/{self._pid}/status"
        while not self._stop.wait(_WATCH_INTERVAL_S):
            rss = _vm_rss(status)
            if rss is not None and rss > self._cap:
                # Recorded before the kill, so the parent sees it as soon as communicate() returns.
                self.over_cap = rss
                try:
                    os.killpg(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _vm_rss(status_path: str) -> int | None:
    """VmRSS in bytes from a /proc/<pid>/status file; None once the process is gone or a zombie."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _default_cap() -> int:
    """80% of the memory available now: MemAvailable, or the cgroup's headroom when that is smaller."""
    available = _meminfo_available()
    headroom = _cgroup_headroom()
    if headroom is not None:
        available = min(available, headroom) if available else headroom
    if not available:
        # No figure to go by: the kernel's OOM killer is then the only limit, and a killed child
        # is still reported as a failure rather than taking the parent down with it.
        return 1 << 62
    return int(available * 0.8)


def _meminfo_available() -> int:
    """MemAvailable from /proc/meminfo in bytes, 0 when unreadable."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cgroup_headroom() -> int | None:
    """memory.max minus memory.current of this process's cgroup (v2), or None when unlimited or unknown."""
    # In a container MemAvailable describes the host; the cgroup limit is what the OOM killer uses.
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            line = next((x for x in f if x.startswith("0::")), None)
        if line is None:
            return None
        base = Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def _last_json(out: bytes) -> dict[str, Any] | None:
    """The child's result: the last stdout line that parses as a JSON object."""
    for line in reversed(out.decode("utf-8", errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def crash_reason(returncode: int, err: bytes) -> str:
    """One line saying why the child ended without a result."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        reason = f"the child process was killed by {name}"
        if -returncode == signal.SIGKILL:
            reason += " (possibly by the kernel for lack of memory)"
        return reason
    # A Python traceback ends with the exception line; native crashes usually print their cause
    # last too, so the last non-empty stderr line is the most telling one.
    lines = [x.strip() for x in err.decode("utf-8", errors="replace").splitlines() if x.strip()]
    detail = lines[-1][:300] if lines else "no error message"
    return f"the child process exited with status {returncode}: {detail}"


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
