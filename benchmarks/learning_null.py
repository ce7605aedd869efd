"""The margins of tests/test_learning.py: each algorithm trained against its null, 3 seeds.

For every case of ``tests/test_learning.py`` (its exact settings, :data:`CASES`) and
each seed, trains the run as configured and with meta-learning switched off (the null:
the same run and seed plus the case's ``null`` flags), in-process, one run at a time, and
prints one row per seed:

- ``trained``, ``null``: the last meta-test's return (the case's tag) of each run;
- ``gap``: trained minus null, what the test's ``margin`` bounds;
- ``improve``: trained's last meta-test minus its first (after iteration 0), what the
  test's ``improvement`` bounds; ``null impr``: the same for the null, whose policy does
  not change, so it is the meta-test's own noise;
- the seconds of each run;

then the min and mean gap and improvement per algorithm. Set a test's margin to about
half of its smallest gap (and above the null's spread).

With ``--check-frozen`` it also checks that each null freezes every meta-learned tensor:
the learner's parameters in the null's final checkpoint equal those of a 1-iteration null
run (the initial ones, as no update moved them).

    python benchmarks/learning_null.py                       # every case, seeds 0 1 2
    python benchmarks/learning_null.py --algo pearl --seeds 0 3 4
    python benchmarks/learning_null.py --check-frozen

Run it on a quiet machine (``--torch-threads 1`` and in-process sampling are in the
settings, so it uses one core).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metarl.checkpoint import load_checkpoint, periodic_checkpoints  # noqa: E402
from tests.test_learning import CASES, Case, run_curve  # noqa: E402

# The learner-state entries that hold what a run meta-learns (optimiser moments, replay
# buffers and random states change in a null run too, but move no parameter).
LEARNED = ("policy", "inner", "networks", "log_alpha")


def learned_tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor under the :data:`LEARNED` entries of a learner state, by dotted name."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        for key, value in state.items():
            if prefix or key in LEARNED:
                out.update(learned_tensors(value, f"{prefix}.{key}" if prefix else key))
    return out


def check_frozen(case: Case, tmp: Path) -> str:
    """Whether the null's parameters after all its iterations equal those after one."""
    finals = []
    for name, extra in (("one", ["--iterations", "1"]), ("all", [])):
        run_curve([*case.argv(null=True), *extra], tmp, f"{case.algo}-frozen-{name}", case.tag)
        state = load_checkpoint(periodic_checkpoints(tmp / f"{case.algo}-frozen-{name}")[-1])
        finals.append(learned_tensors(state["learner"]))
    one, full = finals
    moved = [k for k in one if not torch.equal(one[k], full[k])]
    if not one:
        return "no learned tensors found"
    return f"{len(one)} tensors, all frozen" if not moved else f"moved: {', '.join(moved)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", nargs="+", help="only these cases (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--check-frozen", action="store_true",
                        help="also check that each null moves no learned parameter")  # fmt: skip
    args = parser.parse_args()
    cases = [c for c in CASES if not args.algo or c.algo in args.algo]

    print(f"{'algo':<10} {'seed':>4} {'trained':>8} {'null':>8} {'gap':>7} {'improve':>8} "
          f"{'null impr':>9} {'s trained':>9} {'s null':>7}  tag", flush=True)  # fmt: skip
    summary = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in cases:
            gaps, improvements = [], []
            for seed in args.seeds:
                curves, seconds = [], []
                for null in (False, True):
                    start = time.perf_counter()
                    name = f"{case.algo}-s{seed}-{'null' if null else 'trained'}"
                    curves.append(run_curve(case.argv(null=null, seed=seed), tmp, name, case.tag))
                    seconds.append(time.perf_counter() - start)
                trained, null = curves
                gap, improvement = trained[-1] - null[-1], trained[-1] - trained[0]
                gaps.append(gap)
                improvements.append(improvement)
                print(f"{case.algo:<10} {seed:>4} {trained[-1]:>8.2f} {null[-1]:>8.2f} "
                      f"{gap:>7.2f} {improvement:>8.2f} {null[-1] - null[0]:>9.2f} "
                      f"{seconds[0]:>9.1f} {seconds[1]:>7.1f}  {case.tag}", flush=True)  # fmt: skip
            summary.append((case, gaps, improvements))
            if args.check_frozen:
                print(f"{case.algo:<10} null {' '.join(case.null)}: {check_frozen(case, tmp)}",
                      flush=True)  # fmt: skip

    print(f"\n{'algo':<10} {'min gap':>8} {'mean gap':>9} {'min impr':>9} {'mean impr':>10} "
          f"{'margin':>7} {'improvement':>12}")  # fmt: skip
    for case, gaps, improvements in summary:
        print(f"{case.algo:<10} {min(gaps):>8.2f} {statistics.mean(gaps):>9.2f} "
              f"{min(improvements):>9.2f} {statistics.mean(improvements):>10.2f} "
              f"{case.margin:>7.2f} {case.improvement:>12.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
