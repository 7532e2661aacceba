"""Child side of auditor.measure: runs one model with onnxruntime and prints one JSON result line.

Started as ``python <path>/_measure_child.py`` (see measure.py for why not ``-m``). It reads the
request as JSON on stdin and writes ``{"ok": true, ...}`` or ``{"ok": false, "slug", "message"}``.
It imports only the standard library, numpy and onnxruntime.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder (auditor/) comes first on sys.path, ahead of the standard
# library and site-packages; drop it so that auditor's own modules (graph.py, errors.py, report/...)
# can never shadow a module that numpy or onnxruntime imports.
if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]

import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

_STATUS = "/proc/self/status"
_MIB = 1 << 20
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class _Failure(Exception):
    """A failure the parent reports under its own slug."""

    def __init__(self, slug: str, message: str) -> None:
        super().__init__(message)
        self.slug = slug
        self.message = message


def main() -> int:
    """Read the request, measure, print the result line; always exit 0 once a result is printed."""
    # Native code (onnxruntime, CUDA) may print to fd 1; keep the real stdout for the result line
    # alone and send everything else to stderr, so the parent never has to pick the JSON out of noise.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        result = _measure(json.loads(sys.stdin.read()))
    except _Failure as exc:
        result = {"ok": False, "slug": exc.slug, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - every other failure is reported as one line
        result = {"ok": False, "slug": "profile-failed", "message": _one_line(exc)}
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    return 0


def _measure(request: dict[str, Any]) -> dict[str, Any]:
    """Build the inputs, create the session, run it, and return the figures."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as exc:
        raise _Failure("profile-unavailable", f"measuring needs onnxruntime and numpy: {exc}") from exc
    device = str(request["device"])
    provider = _PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise _Failure(
            "profile-unavailable",
            f"onnxruntime here has no {provider}: measuring on {device} needs onnxruntime-gpu and an NVIDIA GPU",
        )
    model = str(request["model"])
    runs = int(request["runs"])
    warmup = int(request["warmup"])

    # Inputs are built before the baseline: they are the caller's data, not the model's, so the
    # baseline includes them and every figure over the baseline belongs to the session.
    rng = np.random.default_rng(0)
    feeds = {str(spec["name"]): _make_input(np, rng, spec) for spec in request["inputs"]}

    options = ort.SessionOptions()
    if request.get("threads") is not None:
        options.intra_op_num_threads = int(request["threads"])
    tracker = _PeakTracker()
    gpu = _DeviceMemory() if device == "cuda" else None

    gc.collect()
    tracker.reset()
    baseline = tracker.rss()
    try:
        session = ort.InferenceSession(model, options, providers=[provider])
    except Exception as exc:
        raise _Failure("profile-failed", f"onnxruntime could not load {os.path.basename(model)}: {_one_line(exc)}")
    creation_peak = tracker.peak()
    session_rss = tracker.rss()
    used = session.get_providers()
    if device == "cuda" and provider not in used:
        # onnxruntime falls back to the CPU silently when the CUDA libraries fail to load.
        raise _Failure(
            "profile-unavailable", f"onnxruntime could not use {provider} (it ran on {used[0]}); check CUDA and cuDNN"
        )

    def run() -> None:
        try:
            session.run(None, feeds)
        except Exception as exc:
            raise _Failure(
                "profile-failed", f"onnxruntime could not run {os.path.basename(model)}: {_one_line(exc)}"
            ) from None

    # The first run gets its own phase: onnxruntime plans and allocates its buffers there, so its
    # peak often differs from the steady state. With no warm-up it is the first timed run.
    latencies: list[float] = []
    tracker.reset()
    _timed(run, latencies if warmup == 0 else None)
    first_run_peak = tracker.peak()
    tracker.reset()
    for _ in range(max(warmup - 1, 0)):
        run()
    for _ in range(runs - len(latencies)):
        _timed(run, latencies)
    rest_peak = tracker.peak()
    # Sampled while the session is still alive: onnxruntime's device arena keeps what it took, so
    # this catches the peak even when the runs were shorter than one sampling interval.
    device_peak = gpu.finish() if gpu is not None else None
    tracker.close()

    peak = max(creation_peak, first_run_peak, rest_peak)
    return {
        "ok": True,
        "provider": used[0],
        "baseline_bytes": baseline,
        "session_bytes": max(0, session_rss - baseline),
        "creation_peak_bytes": max(0, creation_peak - baseline),
        "first_run_peak_bytes": max(0, first_run_peak - baseline),
        "peak_bytes": device_peak if device_peak is not None else max(0, peak - baseline),
        "latencies_ms": latencies,
    }


def _timed(run: Callable[[], None], latencies: list[float] | None) -> None:
    """Run once, appending the wall time in ms when a list is given."""
    start = time.perf_counter()
    run()
    if latencies is not None:
        latencies.append((time.perf_counter() - start) * 1e3)


def _make_input(np: Any, rng: Any, spec: dict[str, Any]) -> Any:
    """A random array for one input spec: floats standard normal, integers uniform in [low, high)."""
    name = str(spec["name"])
    shape = tuple(int(d) for d in spec["shape"])
    try:
        dtype = np.dtype(str(spec["dtype"]))
        if dtype.kind == "b":
            return rng.random(shape) < 0.5
        if dtype.kind in "iu":
            return rng.integers(int(spec["low"]), int(spec["high"]), size=shape, dtype=dtype)
        if dtype.kind == "f":
            return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    except (TypeError, ValueError) as exc:
        raise _Failure("profile-failed", f"cannot build input {name!r}: {_one_line(exc)}") from None
    raise _Failure("profile-failed", f"cannot build input {name!r}: dtype {dtype.name} is not supported")


class _PeakTracker:
    """Peak RSS since the last reset, from the kernel's resettable high-water mark (VmHWM).

    Writing "5" to /proc/self/clear_refs resets VmHWM to the current RSS (Linux >= 4.0). Where that
    write fails (older kernels, a locked-down /proc), a thread samples VmRSS every ~1 ms instead,
    which can miss a peak shorter than that.
    """

    def __init__(self) -> None:
        self._exact = _clear_hwm()
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self._exact:
            self._sampled = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def reset(self) -> None:
        """Start a new phase: the peak restarts from the current RSS."""
        if self._exact:
            _clear_hwm()
        else:
            self._sampled = self.rss()

    def peak(self) -> int:
        """Peak RSS in bytes since the last reset."""
        if self._exact:
            return max(_status_kib("VmHWM"), _status_kib("VmRSS")) * 1024
        return max(self._sampled, self.rss())

    def rss(self) -> int:
        """Current RSS in bytes."""
        return _status_kib("VmRSS") * 1024

    def close(self) -> None:
        """Stop the sampling thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, self.rss())


def _clear_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS; False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_kib(key: str) -> int:
    """One kB figure from /proc/self/status."""
    with open(_STATUS, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise _Failure("profile-unavailable", f"{_STATUS} has no {key}: memory cannot be measured here")


class _DeviceMemory:
    """Peak GPU memory of this process, sampled with nvidia-smi in a thread until finish().

    nvidia-smi lists processes by their pid in the host's namespace; inside a container that is
    not os.getpid(). Then the device-wide used memory over its value before the session is used
    instead, which also counts any other process that allocates meanwhile.
    """

    def __init__(self) -> None:
        self._smi = shutil.which("nvidia-smi")
        if self._smi is None:
            raise _Failure("profile-unavailable", "nvidia-smi was not found: device memory cannot be measured")
        self._pid = os.getpid()
        self._own = 0  # MiB, this pid's peak
        self._device_before = self._device_used()
        self._device = self._device_before  # MiB, device-wide peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def finish(self) -> int:
        """Take a last sample, stop, and return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._own:
            return self._own * _MIB
        if self._device_before is None or self._device is None:
            raise _Failure("profile-unavailable", "nvidia-smi did not report device memory")
        return max(0, self._device - self._device_before) * _MIB

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.02)

    def _sample(self) -> None:
        for line in self._query("--query-compute-apps=pid,used_memory"):
            fields = [x.strip() for x in line.split(",")]
            if len(fields) == 2 and fields[0] == str(self._pid) and fields[1].isdigit():
                self._own = max(self._own, int(fields[1]))
        used = self._device_used()
        if used is not None:
            self._device = used if self._device is None else max(self._device, used)

    def _device_used(self) -> int | None:
        values = [int(x) for x in self._query("--query-gpu=memory.used") if x.strip().isdigit()]
        return sum(values) if values else None

    def _query(self, query: str) -> list[str]:
        assert self._smi is not None
        try:
            done = subprocess.run(
                [self._smi, query, "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        return done.stdout.splitlines() if done.returncode == 0 else []


def _one_line(exc: BaseException) -> str:
    """The first meaningful line of an exception's message, without onnxruntime's status prefix."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    text = lines[0] if lines else type(exc).__name__
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : message" -> "INVALID_ARGUMENT: message"
    if text.startswith("[ONNXRuntimeError]"):
        parts = [p.strip() for p in text.split(" : ", 3)]
        if len(parts) == 4:
            text = f"{parts[2]}: {parts[3]}"
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
