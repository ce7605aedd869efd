"""``metarl export RUN_DIR``: write a slim checkpoint, all that ``metarl evaluate`` reads.

The slim file (:func:`metarl.checkpoint.slim_checkpoint`) holds the learner's
meta-test state (:func:`metarl.algos.base.slim_state`: the policy, and Meta-SGD's
step sizes, PEARL's context encoder, ...), the config and the iteration; no
optimiser, replay buffer or RNG state. By default it is
``RUN_DIR/checkpoints/slim_iterNNNNNN.pt``, numbered as the checkpoint it comes from;
``metarl evaluate RUN_DIR --checkpoint slim_iterNNNNNN.pt`` evaluates it exactly as
the full checkpoint, and ``--resume`` refuses it.

Bad input (no such run, no checkpoint, an unwritable ``--out``) is one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarl.algos.base import slim_state
from metarl.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    is_slim,
    load_checkpoint,
    slim_checkpoint,
    slim_path,
)
from metarl.cli import OneLineErrorParser, add_run_and_checkpoint, run_command

PROG = "python -m metarl.export"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=prog,
        description="Write a slim checkpoint: what evaluate and --video need, nothing else.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_and_checkpoint(parser)
    parser.add_argument(
        "--out", help="the file to write; default RUN_DIR/checkpoints/slim_iterNNNNNN.pt"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return parser


def slim_of(state: dict, run_dir: Path) -> dict:
    """The slim checkpoint of the loaded checkpoint ``state`` of ``run_dir``: its learner
    rebuilt from the config (no rollouts) to ask it for its slim state."""
    if is_slim(state):
        return state
    from metarl.config import restore_device
    from metarl.configure import restored_config
    from metarl.run import restore_run

    device = restore_device(state["config"].get("device", "auto"))
    config = restored_config(state["config"], {"workers": 0, "device": device})
    run = restore_run(state, config, run_dir)
    try:
        return slim_checkpoint(state, slim_state(run.learner))
    finally:
        run.sampler.close()


def write_slim(slim: dict, out: Path) -> Path:
    """Write ``slim`` to ``out`` atomically; a one-line CheckpointError if it cannot."""
    try:
        atomic_torch_save(slim, out)
    except OSError as exc:
        reason = exc.strerror or exc
        raise CheckpointError(f"--out {str(out)!r} cannot be written: {reason}") from exc
    return out


def export(args: argparse.Namespace) -> int:
    """The command: load, slim, write; prints the file written and both sizes."""
    from metarl.evaluate import checkpoint_path

    run_dir = Path(args.run_dir)
    source = checkpoint_path(run_dir, args.checkpoint)
    state = load_checkpoint(source)
    out = Path(args.out) if args.out else slim_path(run_dir, state["iteration"])
    if out.resolve() == source.resolve():
        raise CheckpointError(f"--out {str(out)!r} is the checkpoint being exported")
    write_slim(slim_of(state, run_dir), out)
    size, full = out.stat().st_size, source.stat().st_size
    print(f"wrote {out} ({size:,} bytes; {source.name}: {full:,} bytes)")
    return 0


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command(lambda: export(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
