"""``python -m metarl.train`` (or ``metarl train``): parse -> config -> build -> loop.

The command line only: the run is assembled by :mod:`metarl.run` and trained by
:mod:`metarl.loop`; no algorithm maths here.

Examples::

    python -m metarl.train --env halfcheetah-vel
    python -m metarl.train --config experiments/maml_trpo_halfcheetah_dir.yaml --seed 1
    python -m metarl.train --list-envs
    python -m metarl.train --resume runs/halfcheetah-vel-maml-trpo-20261122-101500

On a terminal a live status line shows the phase of the running iteration (sampling,
adapting, updating, meta-testing), its env steps, its seconds and the run's ETA;
each iteration still leaves one ``iter ...`` line. Elsewhere (a pipe, a log file)
or with ``--quiet``, only the lines are printed.

From a script (say, after ``metarl.register_family(...)``), under a ``__main__`` guard::

    if __name__ == "__main__":
        sys.exit(metarl.train.main(["--env", "target", *sys.argv[1:]]))  # the exit code

or ``run_dir = metarl.train.run({"env": "target"})``, which raises errors instead.

Exit codes:

* 0: done, or stopped cleanly by a first Ctrl-C / SIGTERM after writing a checkpoint;
* 1: the run failed and cannot go on (an env returned a non-finite observation or
  reward, a rollout worker died, ``max_consecutive_rejections`` non-finite updates
  in a row); the last checkpoint is intact and the message says how to resume;
* 2: bad input: an unknown env, algorithm or key, a bad value, a missing or invalid
  YAML file, a missing, corrupt or incompatible checkpoint for ``--resume``,
  ``--device cuda`` without CUDA, a run whose recorded family cannot be imported here,
  a script that trains at its top level without ``if __name__ == "__main__":`` (its
  rollout workers re-run it). One line on stderr; ``--debug`` shows the traceback;
* 130 (143): a second Ctrl-C (SIGTERM) stopped the run at once; the last checkpoint
  is intact.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarl import registry
from metarl.algos.registry import algorithms
from metarl.cli import OneLineErrorParser, run_command
from metarl.config import load_yaml
from metarl.configure import add_config_arguments, build_config, config_overrides

PROG = "python -m metarl.train"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    algos = "\n".join(f"  {a.name:<10} {a.summary}" for a in algorithms())
    parser = OneLineErrorParser(
        prog=prog,
        description="Meta-train a policy on a task family. Algorithms (--algo):\n" + algos,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of config keys (CLI flags override it)")
    parser.add_argument("--list-envs", action="store_true", help="list the task families and exit")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="plain output, one line per iteration, no live status line (the output when "
        "stdout is not a terminal); not a config key: it changes nothing of the run",
    )
    parser.add_argument(
        "--wandb-project",
        metavar="NAME",
        help="also log the scalars to this Weights & Biases project (pip install "
        "'metarl[wandb]'; WANDB_MODE=offline logs without a network); not a config key",
    )
    add_config_arguments(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The CLI; returns the exit code (see the module docstring)."""
    args = build_parser(prog).parse_args(argv)

    def command() -> int:
        from metarl.loop import resume, start_run

        if args.list_envs:
            print(registry.family_table())
            return 0
        base = load_yaml(args.config) if args.config else {}
        # How the run is shown and mirrored: flags of the command, not config keys.
        display = {"quiet": args.quiet, "wandb_project": args.wandb_project}
        if args.resume:
            return resume(Path(args.resume), {**base, **config_overrides(args)}, **display)
        return start_run(build_config(config_overrides(args), base), **display)

    return run_command(command, debug=args.debug)


def run(keys: Mapping[str, Any] | None = None, /, *, quiet: bool = False, **more: Any) -> Path:
    """Train a new run in this process from config keys; returns its run directory.

    ``keys`` and ``more`` are config keys as a YAML file holds them (``run({"env":
    "target", "iterations": 100})`` or ``run(env="target", iterations=100)``); ``quiet``
    as ``--quiet``. Unlike :func:`main`, which returns an exit code, errors are raised:
    a :class:`~metarl.options.ConfigError` (or another of :data:`metarl.cli.BAD_INPUT`)
    for bad input, :class:`~metarl.loop.RunFailure` when the run cannot go on, and
    ``KeyboardInterrupt`` when a second Ctrl-C stopped it (a first one returns the run
    directory, its checkpoint written). Call it under ``if __name__ == "__main__":`` when
    it starts rollout workers: they start by spawn and re-import the calling script.
    """
    from metarl.loop import new_run_dir, start_run
    from metarl.sampling.worker import exit_if_spawn_bootstrapping

    exit_if_spawn_bootstrapping()  # a rollout worker re-running an unguarded script
    config = build_config({**(keys or {}), **more})
    run_dir = new_run_dir(config)
    if start_run(config, quiet=quiet, run_dir=run_dir) != 0:
        raise KeyboardInterrupt
    return run_dir


if __name__ == "__main__":
    sys.exit(main())
