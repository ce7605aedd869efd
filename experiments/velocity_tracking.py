"""Does an RL2 policy on halfcheetah-vel run at its task's target speed?

The meta-test return of an RL2 run compares episode 1 of a trial with
episode 2, but on halfcheetah-vel the reward says at every step how far the
speed is from the target, so a policy can adapt within the first episode and
score the same in both. This script measures the adaptation itself: for every
held-out task it runs one trial of a checkpoint (the last by default) with
the mean action (no exploration noise) and prints the target speed, the
mean forward speed of each episode (over its second half, once up to speed)
and the episode returns. Its last line is the least-squares slope of the
last episode's speed against the target over the tasks: about 1 for a
policy that finds each target, about 0 for one that runs one speed for
every task (the reward is the only input that depends on the task).

    python experiments/velocity_tracking.py RUN_DIR [--checkpoint best] [--episodes 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from metarl.checkpoint import load_checkpoint
from metarl.configure import build_config
from metarl.evaluate import checkpoint_path
from metarl.run import Run, make_config_env, restore_run
from metarl.seeding import derive_seed


def run_trial(policy, env, task, episodes: int, seed: int) -> dict[str, list | torch.Tensor]:
    """One trial of ``episodes`` episodes of ``task`` with the mean action, step by step.

    Returns each episode's mean forward speed over its second half (``speeds``) and
    return (``returns``), and the trial as recorded: ``observations [L, D]``,
    ``actions [L, A]`` (the mean actions, before clipping), ``rewards [L]``, ``dones [L]``,
    in the layout :func:`metarl.policies.recurrent.rl2_inputs` reads.
    """
    spec = policy.spec
    env.unwrapped.set_task(task)
    hidden = torch.zeros(1, 1, spec.hidden_size)
    prev = torch.zeros(spec.act_dim + 2)  # previous action, reward, done (see rl2_inputs)
    low, high = env.action_space.low, env.action_space.high
    trial = {"speeds": [], "returns": [], "observations": [], "actions": [], "rewards": [],
             "dones": []}  # fmt: skip
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        velocities, total, done = [], 0.0, False
        while not done:
            obs = torch.as_tensor(obs, dtype=torch.float32)
            with torch.no_grad():
                out, hidden = policy.gru(torch.cat([obs, prev]).view(1, 1, -1), hidden)
                action = policy.mean_head(out).view(-1)
            next_obs, reward, terminated, truncated, info = env.step(
                np.clip(action.numpy(), low, high)
            )
            done = bool(terminated or truncated)
            for key, value in zip(("observations", "actions", "rewards", "dones"),
                                  (obs, action, float(reward), float(done))):  # fmt: skip
                trial[key].append(value)
            velocities.append(float(info["x_velocity"]))
            total += float(reward)
            prev = torch.cat([action, torch.tensor([float(reward), float(done)])])
            obs = next_obs
        trial["speeds"].append(float(np.mean(velocities[len(velocities) // 2 :])))
        trial["returns"].append(total)
    for key in ("observations", "actions"):
        trial[key] = torch.stack(trial[key])
    for key in ("rewards", "dones"):
        trial[key] = torch.tensor(trial[key])
    return trial


def restore(run_dir: Path, which: str = "latest") -> tuple[dict, Run]:
    """The checkpoint ``which`` of ``run_dir`` and its run rebuilt on the CPU, in-process,
    with the trained weights loaded (its held-out pool is ``run.pools.test``)."""
    state = load_checkpoint(checkpoint_path(run_dir, which))
    config = build_config({**state["config"], "workers": 0, "device": "cpu"})
    run = restore_run(state, config, run_dir)
    run.sampler.close()  # workers 0: nothing to stop; the trial is stepped here
    return state, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="an RL2 run directory on halfcheetah-vel")
    parser.add_argument("--checkpoint", default="latest", help="'latest', 'best' or a path")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per trial")
    args = parser.parse_args(argv)

    state, run = restore(Path(args.run_dir), args.checkpoint)
    config = run.config
    if config.algo != "rl2" or config.env != "halfcheetah-vel":
        print(
            f"error: needs an rl2 run on halfcheetah-vel, got {config.algo} on {config.env}",
            file=sys.stderr,
        )
        return 2
    policy = run.learner.policy.eval()
    env = make_config_env(config)

    print(f"{config.algo} on {config.env}, iteration {state['iteration'] + 1}, mean actions")
    print("target | speed per episode | return per episode")
    targets, achieved = [], []
    for i, task in enumerate(run.pools.test):
        trial = run_trial(
            policy, env, task, args.episodes, derive_seed(config.seed, "velocity-tracking", i)
        )
        speeds, returns = trial["speeds"], trial["returns"]
        targets.append(task.velocity)
        achieved.append(speeds[-1])
        print(
            f"{task.velocity:6.2f} | {' '.join(f'{s:5.2f}' for s in speeds)} | "
            f"{' '.join(f'{r:7.1f}' for r in returns)}"
        )
    env.close()
    slope = float(np.polyfit(targets, achieved, 1)[0])
    print(f"std over tasks: achieved {np.std(achieved):.2f}, target {np.std(targets):.2f}")
    print(f"slope_achieved_vs_target: {slope:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
