"""Mutation score of the core numeric modules: mutmut 3, one module at a time.

For each module this copies the source and tests into its own scratch folder
(``--workdir``, default ``build/mutation/<module>``), so the checkout is never
mutated, and runs ``mutmut run`` there with only that file mutated and only the
fast tests that exercise it selected (``SELECTIONS`` below). mutmut then runs,
for each mutant, the selected tests that call the mutated function. A
``conftest.py`` added to the scratch copy records ``metarl.__file__`` of every
pytest session; the script checks that it was the scratch copy's mutated code.

    pip install mutmut                  # 3.x; not a project dependency
    python benchmarks/mutation.py [MODULE ...] [--max-children 2] [--workdir DIR]
        [--survivors] [--before]

MODULE is a key of ``SELECTIONS`` (``optim``, ``maml_trpo``, ...; default all).
Prints a table: module, mutants, killed, survived, timeout, other (mutmut's
"no tests", "suspicious", "segfault"), score = (killed + timeout) / mutants, and
with ``--survivors`` each surviving mutant's name and diff. Not part of CI: a
module takes minutes to an hour on two cores (docs/testing.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAST = ["-m", "not slow"]


@dataclass(frozen=True)
class Selection:
    """One module to mutate and the pytest arguments that select its fast tests."""

    path: str  # relative to the repository root
    tests: tuple[str, ...]
    # pytest node ids left out: slow tests of another module's job (each mutant reruns them)
    deselect: tuple[str, ...] = ()


SELECTIONS: dict[str, Selection] = {
    "optim": Selection(
        "metarl/optim.py",
        (
            "tests/test_optim.py",
            "tests/test_exact_trpo.py",
            "tests/test_trpo_chunks.py",
            "tests/test_mutants_optim.py",
        ),
    ),
    "returns": Selection(
        "metarl/returns.py",
        ("tests/test_returns.py", "tests/test_exact_returns.py", "tests/test_mutants_returns.py"),
    ),
    "functional": Selection(
        "metarl/functional.py",
        (
            "tests/test_exact_kl.py",
            "tests/test_exact_trpo.py",
            "tests/test_maml.py",
            "tests/test_exact_meta_sgd.py",
            "tests/test_mutants_functional.py",
        ),
    ),
    "maml": Selection(
        "metarl/algos/maml.py",
        (
            "tests/test_maml.py",
            "tests/test_exact_trpo.py",
            "tests/test_exact_meta_sgd.py",
            "tests/test_trpo_chunks.py",
            "tests/test_mutants_maml.py",
        ),
    ),
    "maml_trpo": Selection(
        "metarl/algos/maml_trpo.py",
        (
            "tests/test_maml.py",
            "tests/test_exact_trpo.py",
            "tests/test_trpo_chunks.py",
            "tests/test_mutants_maml_trpo.py",
        ),
    ),
    "maml_ppo": Selection(
        "metarl/algos/maml_ppo.py",
        ("tests/test_maml.py", "tests/test_mutants_maml_ppo.py"),
    ),
    "meta_sgd": Selection(
        "metarl/algos/meta_sgd.py",
        (
            "tests/test_exact_meta_sgd.py",
            "tests/test_reptile_meta_sgd.py",
            "tests/test_mutants_meta_sgd.py",
        ),
    ),
    "reptile": Selection(
        "metarl/algos/reptile.py",
        ("tests/test_reptile_meta_sgd.py", "tests/test_mutants_reptile.py"),
    ),
    "pearl": Selection(
        "metarl/algos/pearl.py",
        ("tests/test_pearl.py", "tests/test_mutants_pearl.py"),
    ),
    "rollout": Selection(
        "metarl/sampling/rollout.py",
        (
            "tests/test_sampler.py",
            "tests/test_exact_noise.py",
            "tests/test_sampler_fast_path.py",
            "tests/test_mutants_rollout.py",
        ),
        # the worker backend's kill test: 14 s, and no check of the rollout's numbers
        (
            "tests/test_sampler.py::test_killed_worker_raises_instead_of_hanging_and_close_leaves_no_children",
        ),
    ),
}

# Recorded by every pytest session of the scratch copy: which metarl was imported.
IMPORT_PROBE = """
import os

import metarl


def pytest_sessionfinish(session):
    with open(os.environ["METARL_MUTATION_PROBE"], "a") as f:
        f.write(metarl.__file__ + "\\n")
"""

DETECTED = ("killed", "timeout")


def prepare(workdir: Path, selection: Selection, *, mutant_tests: bool = True) -> list[str]:
    """A fresh scratch copy (source, envs as ``metarl/envs``, tests) configured for mutmut;
    returns the test files of the selection that exist (a module's mutant tests may not).
    Without ``mutant_tests`` the ``tests/test_mutants_*.py`` files are left out (the score
    before they were written)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "metarl", workdir / "metarl", ignore=ignore)
    # The installed package maps the top-level envs/ to metarl.envs; the copy does the same.
    shutil.copytree(REPO / "envs", workdir / "metarl" / "envs", ignore=ignore)
    shutil.copytree(REPO / "tests", workdir / "tests", ignore=ignore)
    (workdir / "tests" / "conftest.py").write_text(IMPORT_PROBE)
    tests = [t for t in selection.tests if (REPO / t).exists()]
    if not mutant_tests:
        tests = [t for t in tests if not Path(t).name.startswith("test_mutants_")]
    config = {
        "source_paths": ["metarl"],
        "only_mutate": [selection.path],
        "pytest_add_cli_args_test_selection": [
            *tests,
            *FAST,
            *(a for d in selection.deselect for a in ("--deselect", d)),
        ],
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        # torch is not fork-safe once the suite has run in the parent (mutmut's advice).
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
        # A mutant's first optimizer imports torch._dynamo (seconds, more on a busy
        # machine): without room for that, mutants that survive are reported as timeouts.
        "timeout_constant": 60.0,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    pyproject = (REPO / "pyproject.toml").read_text()
    (workdir / "pyproject.toml").write_text(pyproject + "\n[tool.mutmut]\n" + "\n".join(lines))
    return tests


def statuses(workdir: Path, selection: Selection) -> dict[str, str]:
    """Mutant name -> mutmut status, from the ``.meta`` file mutmut wrote for the module."""
    from mutmut.stats import status_by_exit_code

    meta = workdir / "mutants" / (selection.path + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def run_module(
    name: str, selection: Selection, root: Path, max_children: int, *, mutant_tests: bool = True
) -> dict[str, str]:
    """Mutate one module in ``root / name``; mutant name -> status."""
    workdir = root / name
    prepare(workdir, selection, mutant_tests=mutant_tests)
    probe = workdir / "imported.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", METARL_MUTATION_PROBE=str(probe))
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    log = workdir / "mutmut.log"
    with log.open("w") as out:
        # Its own process group, so stopping this script stops mutmut's workers too.
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            raise
    if rc != 0:
        raise SystemExit(f"{name}: mutmut run exited {rc}; see {log}")
    imported = set(probe.read_text().split()) if probe.exists() else set()
    expected = str((workdir / "mutants" / "metarl" / "__init__.py").resolve())
    if imported != {expected}:
        raise SystemExit(f"{name}: the tests imported {sorted(imported)}, not {expected}")
    return statuses(workdir, selection)


def row(name: str, status: dict[str, str]) -> str:
    counts = {s: sum(v == s for v in status.values()) for s in ("killed", "survived", "timeout")}
    other = len(status) - sum(counts.values())
    score = sum(v in DETECTED for v in status.values()) / max(len(status), 1)
    return (f"| {name} | {len(status)} | {counts['killed']} | {counts['survived']} | "
            f"{counts['timeout']} | {other} | {100 * score:.1f}% |")  # fmt: skip


def show_survivors(workdir: Path, selection: Selection, status: dict[str, str]) -> None:
    """Print each undetected mutant's changed lines (mutmut's diff without its context)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    os.chdir(workdir)
    try:
        for mutant, s in sorted(status.items()):
            if s in DETECTED:
                continue
            diff = get_diff_for_mutant(mutant, path=selection.path).split("\n")
            changed = [line for line in diff[2:] if line[:1] in "+-"]
            print(f"## {mutant}: {s}", *changed, sep="\n")
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(SELECTIONS))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "mutation")
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--before", action="store_true",
                        help="without tests/test_mutants_*.py (the score before them)")  # fmt: skip
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # -> the killpg above
    names = args.modules or list(SELECTIONS)
    unknown = [n for n in names if n not in SELECTIONS]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(SELECTIONS)}")
    rows = []
    for name in names:
        status = run_module(name, SELECTIONS[name], args.workdir.resolve(), args.max_children,
                            mutant_tests=not args.before)  # fmt: skip
        rows.append(row(name, status))
        print(rows[-1], flush=True)
        if args.survivors:
            show_survivors(args.workdir.resolve() / name, SELECTIONS[name], status)
    print("\n| module | mutants | killed | survived | timeout | other | score |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
