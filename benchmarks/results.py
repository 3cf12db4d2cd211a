"""What a run measured: tables of rows, targets, series for the plots, and their rendering."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Results", "Row", "Table", "Target", "machine", "ratio"]


def ratio(value: float | None, reference: float | None) -> float | None:
    """Return ``value / reference``, or None if either is missing or the reference is 0."""
    if value is None or not reference:
        return None
    return value / reference


@dataclass(slots=True)
class Row:
    """One line of a table: a client (or a quantity) and what was measured for it.

    Attributes:
        name: The client or quantity.
        values: Measured values by column name.
        ratio: The table's ratio column for this row, once computed.
        error: Why nothing was measured (the client failed or is not installed).
    """

    name: str
    values: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    error: str | None = None


@dataclass(slots=True)
class Table:
    """The result of one benchmark.

    Attributes:
        key: Short name, as given to ``--only``.
        title: Heading of the table.
        columns: Names of the measured columns, in order.
        reference: The row the ratio column divides by; None for no ratio column.
        ratio_of: The column the ratio is taken of.
        note: What was measured, how, and how to read it.
        rows: The rows, in order.
    """

    key: str
    title: str
    columns: list[str]
    reference: str | None = None
    ratio_of: str | None = None
    note: str = ""
    rows: list[Row] = field(default_factory=list)

    def add(self, name: str, **values: float) -> Row:
        """Append a row with ``values`` (keyword names are looked up in ``columns`` order)."""
        row = Row(name, dict(values))
        self.rows.append(row)
        return row

    def fail(self, name: str, error: BaseException | str) -> Row:
        """Append a row for a client that could not be measured."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        row = Row(name, error=text.splitlines()[0][:200] if text else "failed")
        self.rows.append(row)
        return row

    def row(self, name: str) -> Row | None:
        """Return the row called ``name``, if any."""
        return next((row for row in self.rows if row.name == name), None)

    def value(self, name: str, column: str) -> float | None:
        """Return one measured value, or None if that row failed or is absent."""
        row = self.row(name)
        return None if row is None else row.values.get(column)

    def compute_ratios(self) -> None:
        """Fill each row's ratio to the reference row."""
        if self.reference is None or self.ratio_of is None:
            return
        reference = self.value(self.reference, self.ratio_of)
        for row in self.rows:
            row.ratio = ratio(row.values.get(self.ratio_of), reference)

    def markdown(self) -> str:
        """Render the table, its note first, as Markdown."""
        header = ["", *self.columns]
        if self.reference is not None:
            header.append(f"ratio to {self.reference}")
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for row in self.rows:
            if row.error is not None:
                cells = [f"error: {_escape(row.error)}", *[""] * (len(header) - 2)]
            else:
                cells = [_number(row.values.get(column)) for column in self.columns]
                if self.reference is not None:
                    cells.append("" if row.ratio is None else f"{row.ratio:.2f}x")
            lines.append("| " + " | ".join([row.name, *cells]) + " |")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Target:
    """A goal from the issue, next to what was measured.

    Attributes:
        goal: What is compared, e.g. ``"Pool.request / plain callback client, 100 concurrent"``.
        measured: The measured ratio or quantity; None if it could not be measured.
        bound: The bound it should respect.
        at_least: True if ``measured`` should be at least ``bound``, False for at most.
        unit: Suffix of the numbers (``"x"`` for ratios).
    """

    goal: str
    measured: float | None
    bound: float
    at_least: bool = True
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        """Whether the goal is reached; None if nothing was measured."""
        if self.measured is None:
            return None
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound

    def markdown_row(self) -> str:
        """One line of the targets table.

        The measured figure is rounded towards missing the target (1.999 shows as 1.99 for
        "at least 2"), so the figure shown and the verdict never disagree.
        """
        measured = "n/a"
        if self.measured is not None:
            rounding = math.floor if self.at_least else math.ceil
            measured = f"{rounding(self.measured * 100) / 100:.2f}{self.unit}"
        bound = f"{'>=' if self.at_least else '<='} {self.bound:g}{self.unit}"
        met = {True: "yes", False: "no", None: "n/a"}[self.met]
        return f"| {self.goal} | {measured} | {bound} | {met} |"


@dataclass(slots=True)
class Results:
    """Everything one run produced.

    Attributes:
        size: The ``--size`` of the run.
        machine: What the run ran on (see :func:`machine`).
        tables: One table per benchmark run.
        targets: The issue's goals with the measured figures.
        series: Data behind the plots, by plot name.
        seconds: Wall-clock length of the run.
    """

    size: str
    machine: dict[str, str]
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, key: str) -> Table | None:
        """Return the table of benchmark ``key``, if it ran."""
        return next((table for table in self.tables if table.key == key), None)

    def markdown(self) -> str:
        """Render the run: machine line, tables, then targets."""
        machine = ", ".join(f"{name} {value}" for name, value in self.machine.items())
        parts = [
            f"## h2pool benchmarks, size {self.size} ({self.seconds:.0f} s)\n",
            f"Machine: {machine}\n",
            *(table.markdown() for table in self.tables),
        ]
        if self.targets:
            parts.append(
                "### Targets (issues 7 and 8)\n\n"
                + "| goal | measured | target | met |\n| --- | --- | --- | --- |\n"
                + "\n".join(target.markdown_row() for target in self.targets)
                + "\n"
            )
        return "\n".join(parts)

    def to_json(self) -> str:
        """Serialize the run (tables, targets, plot series) as JSON."""
        data = dataclasses.asdict(self)
        for target, raw in zip(self.targets, data["targets"], strict=True):
            raw["met"] = target.met
        return json.dumps(data, indent=2)

    def write(self, directory: Path) -> None:
        """Write ``results.md`` and ``results.json`` into ``directory``."""
        (directory / "results.md").write_text(self.markdown())
        (directory / "results.json").write_text(self.to_json())


def _number(value: float | None) -> str:
    """Format a measured value: three significant figures at least, no exponent."""
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _escape(text: str) -> str:
    """Keep a message from breaking a Markdown table."""
    return text.replace("|", "/")


def _version(command: list[str]) -> str:
    """The first line a program prints about its version, or ``absent``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "absent"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "absent"


def _package(name: str) -> str:
    """The installed version of a Python distribution, or ``absent``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown CPU"


def machine(nginx: str) -> dict[str, str]:
    """Describe the machine and the versions of everything compared.

    Args:
        nginx: Path of the nginx binary (it may not be on PATH).
    """
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        **{name: _package(name) for name in ("h2pool", "h2", "httpx", "aiohttp", "uvloop")},
        **{name: _package(name) for name in ("hypercorn", "grpcio", "grpclib")},
        "nghttpd": _version(["nghttpd", "--version"]).removeprefix("nghttpd "),
        "nginx": _version([nginx, "-v"]).removeprefix("nginx version: "),
        # Other work on the machine is the main source of noise: say how much there was.
        "load average at start": f"{os.getloadavg()[0]:.1f}",
    }
