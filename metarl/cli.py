"""What the three commands share (one-line errors, exit codes), and the ``metarl`` command.

``metarl train ...``, ``metarl evaluate ...``, ``metarl export ...``,
``metarl baselines ...`` are ``python -m metarl.train ...`` and so on; ``metarl envs``
lists the task families.

Exit codes of every command: 0 done; 1 the run failed and cannot go on (the
message says which checkpoint is intact and how to resume); 2 bad input (an
unknown name, a bad value, a missing or invalid file or checkpoint), as one
line on stderr, ``--debug`` showing the traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from metarl import registry
from metarl.checkpoint import CheckpointError
from metarl.envs.base import FamilyUnavailableError, TaskAPIError
from metarl.options import ConfigError
from metarl.sampling import SamplerError, UnguardedMainError
from metarl.sampling.worker import exit_if_spawn_bootstrapping
from metarl.video import VideoError

BAD_INPUT = (
    ConfigError,
    registry.UnknownEnvError,
    CheckpointError,
    TaskAPIError,
    FamilyUnavailableError,
    VideoError,
    UnguardedMainError,  # a script that trains at its top level, without a __main__ guard
)
"""Errors that mean the user's input is wrong: exit code 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags give one line (not the whole usage) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def add_run_and_checkpoint(parser: argparse.ArgumentParser) -> None:
    """The positional run directory and ``--checkpoint``, as evaluate and export take them."""
    parser.add_argument("run_dir", help="a run directory written by metarl.train")
    parser.add_argument(
        "--checkpoint",
        default="latest",
        help="'latest' (the newest checkpoint; in a run that holds only slim ones, the newest "
        "slim one), 'best', a checkpoint file, or the name of one in RUN_DIR/checkpoints",
    )


def run_command(command: Callable[[], int], *, debug: bool) -> int:
    """Run ``command``; turn the errors a user can act on into one line and an exit code."""
    from metarl.loop import RunFailure  # the loop imports torch's tensorboard: only when run
    from metarl.run import first_line

    # A rollout worker re-running an unguarded script: exit before printing anything; the
    # parent says in one line what to do (metarl.sampling.worker.unguarded_main_hint).
    exit_if_spawn_bootstrapping()
    try:
        return command()
    except BAD_INPUT as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunFailure, SamplerError) as exc:
        if debug:
            raise
        print(f"error: {first_line(exc)}", file=sys.stderr)
        if isinstance(exc, RunFailure):
            print(exc.hint, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


SUBCOMMANDS = {
    "train": ("metarl.train", "meta-train a policy on a task family"),
    "evaluate": ("metarl.evaluate", "meta-test a run on held-out tasks"),
    "baselines": ("metarl.baselines", "stable-baselines3 PPO baselines on the same tasks"),
    "export": ("metarl.export", "write a slim checkpoint: what evaluate needs, nothing else"),
    "plot": ("metarl.plot", "compare runs: curves over seeds with bootstrap bands"),
    "results": ("metarl.results", "the results tables and figures from experiments/results.yaml"),
    "envs": (None, "list the task families"),
}


def main(argv: list[str] | None = None) -> int:
    """``metarl SUBCOMMAND [flags]``: each subcommand is the module of the same name."""
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"  {name:<10} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
        usage = "usage: metarl {" + ",".join(SUBCOMMANDS) + "} [flags]\n\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}\n{usage}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "envs":
        if rest in (["-h"], ["--help"]):
            print(f"usage: metarl envs\n\n{SUBCOMMANDS['envs'][1]}")
            return 0
        if rest:  # it takes no flags: a typo is not silently ignored
            print(f"error: unrecognized arguments: {' '.join(rest)} (metarl envs takes none)",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(registry.family_table())
        return 0
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest, prog=f"metarl {name}")


if __name__ == "__main__":
    sys.exit(main())
