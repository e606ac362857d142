"""Stable-Baselines3 on rl-baselines3-zoo's CartPole-v1 DQN: what ``examples/zoo-cartpole.toml`` is measured against.

Run as a script with a Python that has ``stable-baselines3`` installed (it is not a
dqnbench dependency): ``python sb3_zoo.py SEED [STEPS]`` trains one seed the way
``rl_zoo3 train --algo dqn --env CartPole-v1`` does (the hyper-parameters of the zoo's
``hyperparams/dqn.yml``, its default evaluation every 25,000 steps of 5 episodes on a
separate env) with one torch thread, and prints a JSON line with the wall time and
the final evaluation. ``test_zoo.py`` runs the 7 seeds two at a time, as a 2-core
machine would.
"""

from __future__ import annotations

import json
import sys
import time

#: rl-baselines3-zoo, hyperparams/dqn.yml, CartPole-v1
ZOO = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)
N_TIMESTEPS = 50_000
#: rl_zoo3 train's defaults: --eval-freq 25000 --eval-episodes 5
EVAL_FREQ, EVAL_EPISODES = 25_000, 5


def main(seed: int, steps: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=seed, device="cpu", verbose=0, **ZOO)
    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=seed + 1_000_003)
    callback = EvalCallback(eval_env, eval_freq=EVAL_FREQ, n_eval_episodes=EVAL_EPISODES, verbose=0)
    model.learn(total_timesteps=steps, callback=callback)
    final, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES)
    return {"seed": seed, "steps": steps, "wall_s": time.perf_counter() - started, "final_return": float(final)}


if __name__ == "__main__":
    seed = int(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else N_TIMESTEPS
    print(json.dumps(main(seed, steps)))
