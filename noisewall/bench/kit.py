"""What every benchmark shares: the result line, the machine, helper processes, bulk timing.

Benchmarks run their servers, sinks and crowds as child processes so that the
side being measured has a core's worth of scheduler of its own. Every child's
output goes to a log file (never to a pipe nobody drains, which would stall a
chatty child) and the end of that log is quoted when the child fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: How long a child may take to say it is serving, or to answer one command.
START_TIMEOUT = 30.0


@dataclass
class BenchResult:
    """One benchmark line: our rate, the baseline's rate, and their ratio."""

    name: str
    unit: str
    value: float
    baseline_name: str
    baseline: float

    @property
    def ratio(self) -> float:
        """Our rate divided by the baseline's."""
        return self.value / self.baseline if self.baseline else 0.0

    def as_json(self) -> dict[str, object]:
        """The ``--json`` shape of this line."""
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def machine_description() -> str:
    """One line saying what this ran on, for BENCHMARKS.md."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rss(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def module_argv(module: str, *args: object) -> list[str]:
    """The command line that runs one of our modules with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


class ChildProcess:
    """A benchmark's helper process, stopped by :meth:`stop` (use it in ``try/finally``).

    With ``answers``, the child is spoken to in lines — JSON commands on its
    stdin, one line per answer on its stdout — and its stderr goes to ``log``;
    otherwise both its streams go to ``log``.
    """

    def __init__(self, argv: list[str], log: Path, *, answers: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        self.log = log
        self._buffer = b""
        pipe = subprocess.PIPE if answers else subprocess.DEVNULL
        with log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own modules or fixed tools
                argv, stdin=pipe, stdout=pipe if answers else out, stderr=out,
                env={**(env or {}), **os.environ},
            )

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def failure(self, what: str) -> RuntimeError:
        """An error naming ``what`` went wrong, with the end of the child's log."""
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        return RuntimeError(f"benchmark child {self.log.stem}: {what}"
                            + "".join(f"\n  {line}" for line in tail))

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first match of ``pattern`` in the child's log, once it appears."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log.read_text(errors="replace"))
            if match is not None:
                return match
            if self.process.poll() is not None:
                raise self.failure(f"exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise self.failure(f"did not say {pattern!r} within {timeout:.0f} s")
            time.sleep(0.02)

    def readline(self, timeout: float = START_TIMEOUT) -> str:
        """The child's next line on stdout (``answers`` children only)."""
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.failure(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([descriptor], [], [], remaining)
            if ready:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    raise self.failure(f"exited with status {self.process.wait()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ask(self, command: dict[str, Any]) -> None:
        """Send one command line (``answers`` children only)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()

    def answer(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The child's next JSON line; an ``error`` in it is raised."""
        reply: dict[str, Any] = json.loads(self.readline(timeout))
        if "error" in reply:
            raise self.failure(str(reply["error"]))
        return reply

    def stop(self) -> None:
        """Close its stdin (a line child's signal to finish), then make sure it is gone."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ServingChild(ChildProcess):
    """A child that names the port it serves in its log; ``pattern``'s group 1 is the port."""

    def __init__(self, argv: list[str], log: Path, pattern: str, *,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(argv, log, env=env)
        try:
            self.port = int(self.wait_for(pattern).group(1))
        except BaseException:
            self.stop()
            raise


async def time_bulk_send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         size: int, chunk: int) -> float:
    """Seconds to push ``size`` bytes down a connection to a byte sink and hear it has them.

    The sink answers one byte after our end of stream: the time covers every
    byte's arrival, not just our writes. Closes the connection.
    """
    block = os.urandom(chunk)
    start = time.perf_counter()
    for _ in range(size // chunk):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    await reader.read(1)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed
