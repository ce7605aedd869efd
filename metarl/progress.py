"""What a run shows while it trains: the learner's phase hook, the live display, the ETA.

The training loop (:mod:`metarl.loop`) makes a display with :func:`make_display` and
hands it to the learner as its :class:`Reporter` (see
:func:`metarl.algos.base.attach_progress`). The learner says which phase its
iteration is in and how many env steps it has collected, a few times per
iteration: at phase changes and after each sampler call, never per env step and
never from a rollout worker (sampling stays data-only).

Two displays, one interface:

* :class:`PlainDisplay`: the lines only, one ``iter ...`` line per iteration
  (stdout not a terminal, e.g. CI, ``nohup`` or a log file, or ``--quiet``).
  Scripts and tests read this format.
* :class:`LiveDisplay`: the same lines, kept in the scrollback, above a live
  status line (rich) that shows the phase, the iteration's env steps, its
  seconds so far and the run's ETA from the mean of the last iterations.

``METARL_PROGRESS=live`` or ``=plain`` forces one or the other (``--quiet``
still wins): e.g. ``live`` to see the display through a pipe such as ``| tee``.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

PHASES = ("training", "sampling", "adapting", "updating", "meta-testing", "checkpointing")
"""Phase names the display knows; ``training`` until a learner names its own phase."""

ETA_WINDOW = 10
"""The ETA is the mean duration of this many most recent iterations, times those left."""

ENV_VAR = "METARL_PROGRESS"


class Reporter:
    """Where a learner reports what its iteration is doing; this base ignores everything.

    A learner that takes a reporter (a ``progress`` attribute, see
    :class:`~metarl.algos.base.MetaLearner`) calls it a few times per iteration;
    calls must stay cheap and come from the learner's own process.
    """

    def phase(self, name: str) -> None:
        """The iteration is now in phase ``name`` (one of :data:`PHASES`, or the learner's own)."""

    def steps(self, done: int, total: int) -> None:
        """``done`` env steps collected so far this iteration, of ``total`` as known now.

        ``total`` may shrink as the iteration goes (episodes that end early collect
        fewer steps than the budget); it equals ``done`` once sampling is over.
        """


NULL_REPORTER = Reporter()


def planned_total(done: int, calls_left: int, steps_per_call: int) -> int:
    """The iteration's env steps as known now: ``done`` plus the budget of the sampler calls left.

    A call's budget is tasks x episodes x horizon; episodes that end early make the
    real count smaller, so the total shrinks to ``done`` after the last call.
    """
    return done + calls_left * steps_per_call


def eta_seconds(recent: Sequence[float], iterations_left: int, elapsed: float) -> float | None:
    """Seconds until the run ends, from the durations of the ``recent`` iterations.

    ``iterations_left`` counts the running iteration; ``elapsed`` is how long it has
    run. Each iteration left is taken to last the mean of ``recent``; the running
    one has ``mean - elapsed`` left, or nothing once it has run longer than the mean.
    ``None`` when no iteration has finished yet (nothing to go by).
    """
    if not recent:
        return None
    if iterations_left <= 0:
        return 0.0
    mean = sum(recent) / len(recent)
    return mean * (iterations_left - 1) + max(mean - elapsed, 0.0)


def format_duration(seconds: float | None) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` above (hours not wrapped at a day); ``--`` if unknown."""
    if seconds is None:
        return "--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status_text(
    *,
    iteration: int,
    total_iterations: int,
    phase: str,
    done: int,
    total_steps: int,
    elapsed: float,
    recent: Sequence[float],
) -> tuple[str, str]:
    """The live line's text, left and right of the bar.

    Left: ``iter 3/500 sampling``; right: ``12000/24000 steps | 23.4 s | ETA 6:41:00
    (50.1 s/iter)``; ``steps --`` when the learner does not report steps.
    """
    left = f"iter {iteration + 1}/{total_iterations} {phase:<13}"
    steps = f"{done}/{total_steps} steps" if total_steps > 0 else "steps --"
    eta = eta_seconds(recent, total_iterations - iteration, elapsed)
    pace = f" ({sum(recent) / len(recent):.1f} s/iter)" if recent else ""
    return left, f"{steps} | {elapsed:.1f} s | ETA {format_duration(eta)}{pace}"


def wants_live(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Whether to show the live display: not ``--quiet``, and ``stream`` a real terminal.

    :data:`ENV_VAR` set to ``live`` or ``plain`` decides instead of the terminal test.
    """
    if quiet:
        return False
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in ("live", "plain"):
        return forced == "live"
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    # A dumb terminal cannot move the cursor back up to redraw the status line.
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class PlainDisplay(Reporter):
    """Lines only, each printed as it comes: the format scripts and logs read."""

    live = False

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start_iteration(self, iteration: int) -> None:
        pass

    def end_iteration(self) -> None:
        pass

    def print(self, text: str, *, err: bool = False) -> None:
        """A line that stays (on stderr with ``err``)."""
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


PLAIN = PlainDisplay()


class LiveDisplay(PlainDisplay):
    """A status line redrawn below the kept lines while the run trains (rich's ``Live``).

    The status line is transient: when the display closes it is erased, and the
    scrollback holds the kept lines only, one ``iter ...`` line per iteration as
    :class:`PlainDisplay` prints them. While it is open, anything else written to
    stdout (and to stderr when that is a terminal too) is printed above it.

    Args:
        total_iterations: the run's iteration budget (for ``iter i/N`` and the ETA).
        console: a ``rich.console.Console`` (tests pass one that writes to a buffer);
            default: stdout, taken as a terminal.
        window: how many recent iteration durations the ETA averages.
        clock: seconds, monotonic (tests pass a fake one).
        refresh_per_second: redraws per second; the elapsed seconds tick between phases.
    """

    live = True

    def __init__(
        self,
        total_iterations: int,
        *,
        console: Any = None,
        window: int = ETA_WINDOW,
        clock: Callable[[], float] = time.perf_counter,
        refresh_per_second: float = 2.0,
    ) -> None:
        # rich is imported here, not at the top: the plain path and the learners'
        # Reporter import this module and should not pay for it.
        from rich.console import Console
        from rich.live import Live

        self.total_iterations = total_iterations
        self.console = console or Console(force_terminal=True)
        self.clock = clock
        self.durations: deque[float] = deque(maxlen=window)
        self.iteration = 0
        self._phase = "training"
        self._done = self._total = 0
        self._start = clock()
        self._running = False
        self._open = False
        self._live = Live(
            console=self.console,
            get_renderable=self.frame,
            refresh_per_second=refresh_per_second,
            transient=True,
            redirect_stdout=True,
            # stderr is redrawn around only when it is the terminal too; a redirected
            # stderr (2> file) keeps its messages.
            redirect_stderr=wants_live(False, sys.stderr),
        )

    # -- the display's lifetime -------------------------------------------------------------
    def __enter__(self) -> LiveDisplay:
        self._live.start()
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = self._open = False
        self._live.stop()

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration
        self._phase, self._done, self._total = "training", 0, 0
        self._start = self.clock()
        self._running = True
        self._refresh()

    def end_iteration(self) -> None:
        """Count the iteration's duration (train, meta-test, checkpoint) for the ETA."""
        self.durations.append(self.clock() - self._start)
        self._running = False

    # -- Reporter ---------------------------------------------------------------------------
    def phase(self, name: str) -> None:
        self._phase = name
        self._refresh()

    def steps(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        self._refresh()

    def print(self, text: str, *, err: bool = False) -> None:
        if err:
            super().print(text, err=True)
            return
        # soft_wrap: a long line stays one line (the terminal wraps it), as print() does;
        # no markup or highlighting, so the text is exactly PlainDisplay's.
        self.console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)

    # -- drawing ----------------------------------------------------------------------------
    def frame(self) -> Any:
        """The status line as it looks now (empty between iterations)."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        if not self._running:
            return Text("")
        left, right = status_text(
            iteration=self.iteration,
            total_iterations=self.total_iterations,
            phase=self._phase,
            done=self._done,
            total_steps=self._total,
            elapsed=self.clock() - self._start,
            recent=list(self.durations),
        )
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(no_wrap=True)
        grid.add_column(ratio=1, min_width=10)
        grid.add_column(no_wrap=True)
        # total=None pulses: a learner that does not report its steps still looks alive.
        bar_total = self._total if self._total > 0 else None
        grid.add_row(left, ProgressBar(total=bar_total, completed=self._done), right)
        return grid

    def _refresh(self) -> None:
        # Redraw at once so each phase shows even when it is shorter than a refresh period.
        if self._open:
            self._live.refresh()


def make_display(total_iterations: int, *, live: bool, console: Any = None) -> PlainDisplay:
    """A :class:`LiveDisplay` when ``live`` (see :func:`wants_live`), else :data:`PLAIN`."""
    if live:
        return LiveDisplay(total_iterations, console=console)
    return PLAIN
