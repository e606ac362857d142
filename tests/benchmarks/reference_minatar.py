"""A faithful, plain port of MinAtar's ``examples/dqn.py`` (Young & Tian 2019), the DQN a MinAtar user runs.

This is the reference for dqnbench's speed on image observations, as
``reference_tutorial.py`` is for the tutorial's MLP: MinAtar's ``QNetwork``
(conv 16×3×3 stride 1 → ReLU → 128 → ReLU → actions), its ``replay_buffer`` of
``transition`` namedtuples in a Python list sampled with ``random.sample``, its
``get_state`` (``torch.tensor(s).permute(2, 0, 1).unsqueeze(0).float()``), its
``world_dynamics`` (uniformly random actions before the replay start, then ε
annealed linearly from 1 to 0.1 over ``FIRST_N_FRAMES``, drawn with
``numpy.random.binomial``), its ``train`` (``torch.cat`` of the sampled
tensors, the target net evaluated only on non-terminal next states, Huber loss
``F.smooth_l1_loss``, centered ``RMSprop``) and its frame loop, on MinAtar's own
``Environment`` (sticky actions 0.1 and difficulty ramping, its defaults; all 6
actions), on the CPU.

The hyper-parameters are the module's constants, as in the original. The
optimizer is the one the paper's results were produced with:
``RMSprop(lr=STEP_SIZE, alpha=SQUARED_GRAD_MOMENTUM, centered=True,
eps=MIN_SQUARED_GRAD)``, no momentum (MinAtar's pull request #37, merged in
late 2024, later passed ``momentum=GRAD_MOMENTUM`` too; ``examples/minatar-dqn.toml``
follows the paper, and so does this port).

Changes, all for benchmarking at equal work and none in the per-frame work:

- the loop runs ``total_steps`` frames (``NUM_FRAMES``) and the replay start
  (``REPLAY_START_SIZE``) is a parameter, so a short benchmark still spends most
  of its frames learning; the ε schedule keeps ``FIRST_N_FRAMES`` after it;
- the seeding (``random``, ``numpy``, ``torch`` and ``env.seed``), the
  returned counts and the absence of logging, checkpoints and ``argparse``;
- ``device`` is the CPU (dqnbench's CPU speed is what it is compared with).
"""

from __future__ import annotations

import random
from collections import namedtuple

import numpy
import torch
import torch.nn as nn
import torch.nn.functional as f
import torch.optim as optim
from minatar import Environment

BATCH_SIZE = 32
REPLAY_BUFFER_SIZE = 100000
TARGET_NETWORK_UPDATE_FREQ = 1000
TRAINING_FREQ = 1
FIRST_N_FRAMES = 100000
REPLAY_START_SIZE = 5000
END_EPSILON = 0.1
STEP_SIZE = 0.00025
SQUARED_GRAD_MOMENTUM = 0.95
MIN_SQUARED_GRAD = 0.01
GAMMA = 0.99
EPSILON = 1.0

device = torch.device("cpu")


class QNetwork(nn.Module):
    """One 16-filter 3×3 conv and one 128-unit hidden layer, a quarter of the Nature DQN's widths."""

    def __init__(self, in_channels, num_actions):
        super(QNetwork, self).__init__()  # noqa: UP008 - as the original
        self.conv = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1)

        def size_linear_unit(size, kernel_size=3, stride=1):
            return (size - (kernel_size - 1) - 1) // stride + 1

        num_linear_units = size_linear_unit(10) * size_linear_unit(10) * 16
        self.fc_hidden = nn.Linear(in_features=num_linear_units, out_features=128)
        self.output = nn.Linear(in_features=128, out_features=num_actions)

    def forward(self, x):
        x = f.relu(self.conv(x))
        x = f.relu(self.fc_hidden(x.view(x.size(0), -1)))
        return self.output(x)


transition = namedtuple("transition", "state, next_state, action, reward, is_terminal")


class replay_buffer:  # noqa: N801 - the original's name
    """A cyclic buffer of the last ``buffer_size`` transitions, in a Python list."""

    def __init__(self, buffer_size):
        self.buffer_size = buffer_size
        self.location = 0
        self.buffer = []

    def add(self, *args):
        if len(self.buffer) < self.buffer_size:
            self.buffer.append(transition(*args))
        else:
            self.buffer[self.location] = transition(*args)
        self.location = (self.location + 1) % self.buffer_size

    def sample(self, batch_size):
        return random.sample(self.buffer, batch_size)


def get_state(s):
    """MinAtar's ``(10, 10, C)`` bool state as a ``(1, C, 10, 10)`` float tensor."""
    return (torch.tensor(s, device=device).permute(2, 0, 1)).unsqueeze(0).float()


def world_dynamics(t, replay_start_size, num_actions, s, env, policy_net):
    """One frame of the ε-greedy behaviour policy: ``(s', action, reward, is_terminated)`` as tensors."""
    if t < replay_start_size:
        action = torch.tensor([[random.randrange(num_actions)]], device=device)
    else:
        epsilon = (
            END_EPSILON
            if t - replay_start_size >= FIRST_N_FRAMES
            else ((END_EPSILON - EPSILON) / FIRST_N_FRAMES) * (t - replay_start_size) + EPSILON
        )
        if numpy.random.binomial(1, epsilon) == 1:
            action = torch.tensor([[random.randrange(num_actions)]], device=device)
        else:
            with torch.no_grad():
                action = policy_net(s).max(1)[1].view(1, 1)

    reward, terminated = env.act(action)
    s_prime = get_state(env.state())
    return s_prime, action, torch.tensor([[reward]], device=device).float(), torch.tensor([[terminated]], device=device)


def train(sample, policy_net, target_net, optimizer):
    """One centered-RMSProp step on the Huber loss of a sampled batch."""
    batch_samples = transition(*zip(*sample))
    states = torch.cat(batch_samples.state)
    next_states = torch.cat(batch_samples.next_state)
    actions = torch.cat(batch_samples.action)
    rewards = torch.cat(batch_samples.reward)
    is_terminal = torch.cat(batch_samples.is_terminal)

    Q_s_a = policy_net(states).gather(1, actions)  # noqa: N806 - the original's names

    none_terminal_next_state_index = torch.tensor(
        [i for i, is_term in enumerate(is_terminal) if is_term == 0], dtype=torch.int64, device=device
    )
    none_terminal_next_states = next_states.index_select(0, none_terminal_next_state_index)

    Q_s_prime_a_prime = torch.zeros(len(sample), 1, device=device)  # noqa: N806
    if len(none_terminal_next_states) != 0:
        Q_s_prime_a_prime[none_terminal_next_state_index] = (
            target_net(none_terminal_next_states).detach().max(1)[0].unsqueeze(1)
        )

    target = rewards + GAMMA * Q_s_prime_a_prime
    loss = f.smooth_l1_loss(target, Q_s_a)

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def run_reference(
    total_steps: int, seed: int = 0, game: str = "breakout", replay_start_size: int = REPLAY_START_SIZE
) -> dict:
    """Train for ``total_steps`` frames like ``dqn()`` (replay and target network on); return counts for checking.

    Learning starts on the frame after ``replay_start_size`` (``t > REPLAY_START_SIZE``
    in the original), so it runs ``total_steps - replay_start_size - 1`` train steps.
    """
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    env = Environment(game)
    env.seed(seed)

    in_channels = env.state_shape()[2]
    num_actions = env.num_actions()
    policy_net = QNetwork(in_channels, num_actions).to(device)
    target_net = QNetwork(in_channels, num_actions).to(device)
    target_net.load_state_dict(policy_net.state_dict())
    r_buffer = replay_buffer(REPLAY_BUFFER_SIZE)
    optimizer = optim.RMSprop(
        policy_net.parameters(), lr=STEP_SIZE, alpha=SQUARED_GRAD_MOMENTUM, centered=True, eps=MIN_SQUARED_GRAD
    )

    t, e, policy_net_update_counter = 0, 0, 0
    returns = []
    while t < total_steps:
        G = 0.0  # noqa: N806
        env.reset()
        s = get_state(env.state())
        is_terminated = False
        while (not is_terminated) and t < total_steps:
            s_prime, action, reward, is_terminated = world_dynamics(
                t, replay_start_size, num_actions, s, env, policy_net
            )

            sample = None
            r_buffer.add(s, s_prime, action, reward, is_terminated)
            if t > replay_start_size and len(r_buffer.buffer) >= BATCH_SIZE:
                sample = r_buffer.sample(BATCH_SIZE)

            if t % TRAINING_FREQ == 0 and sample is not None:
                policy_net_update_counter += 1
                train(sample, policy_net, target_net, optimizer)

            if policy_net_update_counter > 0 and policy_net_update_counter % TARGET_NETWORK_UPDATE_FREQ == 0:
                target_net.load_state_dict(policy_net.state_dict())

            G += reward.item()  # noqa: N806
            t += 1
            s = s_prime
        e += 1
        returns.append(G)
    return {"steps": t, "episodes": e, "learn_steps": policy_net_update_counter, "returns": returns}
