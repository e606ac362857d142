"""A faithful, plain port of the tutorial's DQN (../shared/seed/dqn-tutorial.md) to gymnasium.

This is the reference a user would write by hand: the tutorial's ``Net``,
its ``DQN`` class with a NumPy memory of ``hstack``-ed transitions, its
``choose_action`` / ``store_transition`` / ``learn``, and its episode loop, on
CartPole-v1 with gymnasium's 5-tuple ``step``. Two changes only: the
``(B,1)+(B,)`` broadcasting bug of the target is fixed (``q_next.max(1)[0]``
reshaped to ``(B, 1)``), and the loop runs for a number of env steps instead of
400 episodes, so the benchmark can compare throughput at equal work.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH_SIZE = 32
LR = 0.01  # learning rate
EPSILON = 0.9  # greedy policy
GAMMA = 0.9  # reward discount
TARGET_REPLACE_ITER = 100  # target update frequency
MEMORY_CAPACITY = 2000


class Net(nn.Module):
    """The tutorial's net: ``fc1 (10 units) → ReLU → out``, weights N(0, 0.1).

    ``hidden`` widens or deepens it the same way by hand (e.g. ``(256, 256)``
    for the 4-256-256-2 comparison).
    """

    def __init__(self, n_states: int, n_actions: int, hidden: tuple[int, ...] = (10,)):
        super().__init__()
        widths = [n_states, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        for layer in self.hidden:
            layer.weight.data.normal_(0, 0.1)  # initialization
        self.out = nn.Linear(widths[-1], n_actions)
        self.out.weight.data.normal_(0, 0.1)  # initialization

    def forward(self, x):
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class DQN:
    def __init__(self, n_states: int, n_actions: int, hidden: tuple[int, ...] = (10,), batch_size: int = BATCH_SIZE):
        self.n_states, self.n_actions, self.batch_size = n_states, n_actions, batch_size
        self.eval_net, self.target_net = Net(n_states, n_actions, hidden), Net(n_states, n_actions, hidden)
        self.learn_step_counter = 0  # for target updating
        self.memory_counter = 0  # for storing memory
        self.memory = np.zeros((MEMORY_CAPACITY, n_states * 2 + 2))  # initialize memory
        self.optimizer = torch.optim.Adam(self.eval_net.parameters(), lr=LR)
        self.loss_func = nn.MSELoss()

    def choose_action(self, x):
        x = torch.unsqueeze(torch.FloatTensor(x), 0)
        if np.random.uniform() < EPSILON:  # greedy
            actions_value = self.eval_net.forward(x)
            action = torch.max(actions_value, 1)[1].data.numpy()[0]
        else:  # random
            action = np.random.randint(0, self.n_actions)
        return int(action)

    def store_transition(self, s, a, r, s_):
        transition = np.hstack((s, [a, r], s_))
        index = self.memory_counter % MEMORY_CAPACITY  # replace the old memory with new memory
        self.memory[index, :] = transition
        self.memory_counter += 1

    def learn(self):
        if self.learn_step_counter % TARGET_REPLACE_ITER == 0:  # target parameter update
            self.target_net.load_state_dict(self.eval_net.state_dict())
        self.learn_step_counter += 1

        sample_index = np.random.choice(MEMORY_CAPACITY, self.batch_size)  # sample batch transitions
        b_memory = self.memory[sample_index, :]
        n = self.n_states
        b_s = torch.FloatTensor(b_memory[:, :n])
        b_a = torch.LongTensor(b_memory[:, n : n + 1].astype(int))
        b_r = torch.FloatTensor(b_memory[:, n + 1 : n + 2])
        b_s_ = torch.FloatTensor(b_memory[:, -n:])

        q_eval = self.eval_net(b_s).gather(1, b_a)  # shape (batch, 1)
        q_next = self.target_net(b_s_).detach()  # detach from graph, don't backpropagate
        q_target = b_r + GAMMA * q_next.max(1)[0].view(self.batch_size, 1)  # shape (batch, 1)
        loss = self.loss_func(q_eval, q_target)

        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def run_reference(
    total_steps: int, seed: int = 0, hidden: tuple[int, ...] = (10,), batch_size: int = BATCH_SIZE
) -> dict:
    """Train for ``total_steps`` env steps like the tutorial's loop; return counts for checking."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    env = gym.make("CartPole-v1")
    n_actions = env.action_space.n
    n_states = env.observation_space.shape[0]
    dqn = DQN(n_states, n_actions, hidden, batch_size)
    steps, episodes, learn_steps = 0, 0, 0
    s, _ = env.reset(seed=seed)
    while steps < total_steps:
        a = dqn.choose_action(s)
        s_, r, terminated, truncated, _ = env.step(a)
        dqn.store_transition(s, a, r, s_)
        steps += 1
        if dqn.memory_counter > MEMORY_CAPACITY:
            dqn.learn()
            learn_steps += 1
        if terminated or truncated:
            episodes += 1
            s, _ = env.reset()
        else:
            s = s_
    return {"steps": steps, "episodes": episodes, "learn_steps": learn_steps}
