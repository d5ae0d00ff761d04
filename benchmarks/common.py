"""Helpers shared by the benchmark scripts: device choice, timing, machine description, output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceTimer:
    """Elapsed seconds of a region of device work: CUDA events on a GPU, ``perf_counter`` on CPU.

    Usage::

        timer = DeviceTimer(device)
        timer.start()
        ...  # queue work
        seconds = timer.stop()  # synchronises
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._t0 = 0.0
        self._events: tuple[Any, Any] | None = None

    def start(self) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self._events = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            self._events[0].record()
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            seconds = self._events[0].elapsed_time(self._events[1]) / 1e3
            self._events = None
            return seconds
        synchronize(self.device)
        return time.perf_counter() - self._t0


def covered_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (overlaps and nesting counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``platform.processor()`` otherwise)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """What the figures were measured on: CPU, usable cores, load, torch, GPU."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": None,
    }
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device if device is not None else 0)
        info["cuda"] = torch.version.cuda
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """One line for a results table: ``"2x AMD EPYC (AVX2), load 1.2; no GPU"``."""
    cpu = f"{info['usable_cpus']}x {info['cpu']} ({info['cpu_capability']})"
    load = (
        f", 1-min load {info['load_average_1min']}"
        if info.get("load_average_1min") is not None
        else ""
    )
    gpu = f"; GPU {info['gpu']}" if info.get("gpu") else "; no GPU"
    return f"{cpu}{load}{gpu}; torch {info['torch']}"


@dataclass(frozen=True)
class Column:
    """A column of :func:`markdown_table`: dict key, header and a format for its values."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = "{}"

    def render(self, value: Any) -> str:
        if value is None:
            return "-"
        return self.fmt(value) if callable(self.fmt) else self.fmt.format(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows of dicts as a Markdown table (missing keys print as ``-``)."""
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.render(row.get(c.key)) for c in columns) + " |")
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created); ``None`` does nothing."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
