"""Each learner's gradient step against its floor: the same arithmetic written as a single-file script would.

For ``dqn``, ``c51`` (51 atoms), ``qr_dqn`` (200 quantiles), ``munchausen`` and ``iqn``
(N = N' = 64, K = 32, 64 cosines), the defaults, on four settings (one test each): CartPole with
the ``mlp``, ``dueling`` (streams of 64) and ``noisy`` networks, [64, 64], batch 64; MinAtar
Breakout with ``minatar_cnn``, batch 32. dqnbench's side is the loop's gradient step (the
learner's backward, the optimizer step); the floor is the same forward passes, loss, backward and
Adam step written plainly with ``torch.nn``, autograd and ``torch.optim.Adam(fused=True)`` on the
same batch (a noisy layer builds its noisy weight, as scripts do). Timed interleaved in blocks,
best of the rounds, one thread, denormals flushed. ``extra_info``: ``best_us_``, ``floor_us_``,
``ratio_`` and ``learn_path_<setting>_<learner>`` (issue #27 aims at ratios ≤ 1.2). Where
dqnbench computes the same numbers a faster way (a network's manual path, QR-DQN's sort-based
loss) the ratio falls below 1. Figures (loaded 2-core machine): ``docs/components.md``, Learners.
No timing is asserted; the benchmark's own timing (``stats``) is ``iqn``'s step on each setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dqnbench.agent.learning import learn_path
from dqnbench.devtools.pytest_plugin import StepHarness
from dqnbench.run.runner import single_thread
from tests.extras import require

from .test_learner_cost import best_times

LEARNERS = ("dqn", "c51", "qr_dqn", "munchausen", "iqn")
#: setting → (env id, network, batch size, gradient steps per block, rounds when benchmarking)
SETTINGS: dict[str, tuple[str, str, int, int, int]] = {
    "mlp": ("CartPole-v1", "mlp", 64, 10, 20),
    "dueling": ("CartPole-v1", "dueling", 64, 10, 20),
    "noisy": ("CartPole-v1", "noisy", 64, 10, 20),
    "minatar": ("MinAtar/Breakout-v1", "minatar_cnn", 32, 5, 8),
}


def harness(setting: str, learner: str) -> StepHarness:
    """An agent of built-ins for ``setting`` with ``learner`` (networks [64, 64]), stepped until it learns."""
    env, network, batch, _, _ = SETTINGS[setting]
    grid = {"network": {"name": network}, "replay": {"capacity": 1_000}}
    if network != "minatar_cnn":
        grid["network"]["hidden"] = [64, 64]
    agent = {"batch_size": batch, "learning_starts": 2 * batch}
    return StepHarness.for_component(
        "learner", learner, env=env, agent=agent, grid=grid, load_entrypoints=False
    ).warm_up()


# --------------------------------------------------------------------------- the floors, as a script writes them


class PlainNoisyLinear(nn.Module):
    """A NoisyNet layer as scripts write it (Fortunato et al. 2018, factorised): the noisy weight matrix built."""

    def __init__(self, fan_in: int, fan_out: int, sigma0: float = 0.5) -> None:
        super().__init__()
        bound = 1 / math.sqrt(fan_in)
        self.weight_mu = nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((fan_out, fan_in), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(fan_out).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((fan_out,), sigma0 * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def f(size: int) -> torch.Tensor:
            eps = torch.randn(size)
            return eps.sign() * eps.abs().sqrt()

        eps_in, eps_out = f(self.weight_mu.shape[1]), f(self.weight_mu.shape[0])
        weight = self.weight_mu + self.weight_sigma * torch.outer(eps_out, eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * eps_out)


class PlainDueling(nn.Module):
    """Dueling streams (Wang et al. 2016) on features: ``V + A − mean A``, flattened to ``n_actions · outputs``."""

    def __init__(self, features: int, n_actions: int, outputs: int, layer: Callable[[int, int], nn.Module]) -> None:
        super().__init__()
        self.value = nn.Sequential(layer(features, 64), nn.ReLU(), layer(64, outputs))
        self.advantage = nn.Sequential(layer(features, 64), nn.ReLU(), layer(64, n_actions * outputs))
        self.n_actions, self.outputs = n_actions, outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value(x).unsqueeze(-2)  # (…, 1, N)
        advantages = self.advantage(x).unflatten(-1, (self.n_actions, self.outputs))
        return (value + advantages - advantages.mean(dim=-2, keepdim=True)).flatten(-2)


def body(setting: str, obs_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The network up to its last hidden activation, in plain ``torch.nn``, and that activation's width."""
    if setting in ("mlp", "dueling", "noisy"):
        layer = PlainNoisyLinear if setting == "noisy" else nn.Linear
        return nn.Sequential(layer(obs_shape[0], 64), nn.ReLU(), layer(64, 64), nn.ReLU()), 64
    channels, height, width = obs_shape
    flat = 16 * (height - 2) * (width - 2)
    layers = nn.Sequential(nn.Conv2d(channels, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(flat, 128), nn.ReLU())
    return layers, 128


def head(setting: str, features: int, n_actions: int, outputs: int) -> nn.Module:
    """The Q head on features ``(…, features)``: ``(…, n_actions · outputs)``."""
    if setting == "dueling":
        return PlainDueling(features, n_actions, outputs, nn.Linear)
    return (PlainNoisyLinear if setting == "noisy" else nn.Linear)(features, n_actions * outputs)


class PlainNet(nn.Module):
    """``body → head (n_actions · outputs)``, or IQN's ``body ⊙ ReLU(W cos(π i τ) + b) → head (n_actions)``."""

    def __init__(self, setting: str, obs_shape: tuple[int, ...], n_actions: int, outputs: int, cosines: int = 0):
        super().__init__()
        self.body, features = body(setting, obs_shape)
        self.head = head(setting, features, n_actions, outputs)
        self.embedding = nn.Linear(cosines, features) if cosines else None
        self.n_actions, self.outputs, self.cosines = n_actions, outputs, cosines

    def forward(self, obs: torch.Tensor, taus: torch.Tensor | None = None) -> torch.Tensor:
        x = self.body(obs.float())
        if taus is None:
            y = self.head(x)
            return y if self.outputs == 1 else y.view(-1, self.n_actions, self.outputs)
        batch, samples = taus.shape
        cos = torch.cos(taus.unsqueeze(-1) * (math.pi * torch.arange(self.cosines)))
        phi = F.relu(self.embedding(cos))  # (B, N, D)
        return self.head(x.unsqueeze(1) * phi).transpose(1, 2)  # (B, A, N)


def alive(b) -> torch.Tensor:
    """``γᵏ (1 − terminated)`` of a batch."""
    return b.discounts * (1.0 - b.terminated.float())


def dqn_floor(learner, online, target, b):
    q = online(b.obs).gather(1, b.actions[:, None]).squeeze(1)
    with torch.no_grad():
        y = b.rewards + alive(b) * target(b.next_obs).max(1).values
    loss = F.mse_loss(q, y, reduction="none") if learner.kind == "mse" else F.smooth_l1_loss(q, y, reduction="none")
    return (loss * b.weights).mean()


def c51_floor(learner, online, target, b):
    atoms, support = learner.outputs, torch.linspace(learner.v_min, learner.v_max, learner.outputs)
    logits = online(b.obs)[torch.arange(len(b.actions)), b.actions]
    with torch.no_grad():
        probs = F.softmax(target(b.next_obs), dim=-1)
        next_probs = probs[torch.arange(len(b.actions)), (probs * support).sum(-1).argmax(1)]
        shifted = b.rewards[:, None] + alive(b)[:, None] * support
        position = ((shifted.clamp(learner.v_min, learner.v_max) - learner.v_min) / (support[1] - support[0])).clamp(
            0, atoms - 1
        )
        lower = position.clamp(max=atoms - 2).floor()
        upper_share = position - lower
        m = torch.zeros_like(next_probs)
        m.scatter_add_(1, lower.long(), next_probs * (1 - upper_share))
        m.scatter_add_(1, lower.long() + 1, next_probs * upper_share)
    return (-(m * F.log_softmax(logits, dim=-1)).sum(-1) * b.weights).mean()


def pairwise_quantile_loss(theta, targets, taus, kappa):
    u = targets[:, None, :] - theta[:, :, None]
    huber = F.huber_loss(u, torch.zeros_like(u), reduction="none", delta=kappa)
    return ((taus - (u.detach() < 0).float()).abs() * huber / kappa).mean(2).sum(1)


def qr_dqn_floor(learner, online, target, b):
    n = learner.outputs
    taus = ((torch.arange(n) + 0.5) / n)[None, :, None]
    theta = online(b.obs)[torch.arange(len(b.actions)), b.actions]
    with torch.no_grad():
        next_z = target(b.next_obs)
        best = next_z.mean(-1).argmax(1)
        targets = b.rewards[:, None] + alive(b)[:, None] * next_z[torch.arange(len(best)), best]
    return (pairwise_quantile_loss(theta, targets, taus, learner.kappa) * b.weights).mean()


def munchausen_floor(learner, online, target, b):
    alpha, tau, l0 = learner.alpha, learner.tau, learner.l0
    q = online(b.obs).gather(1, b.actions[:, None]).squeeze(1)
    with torch.no_grad():
        q_now, q_next = target(b.obs), target(b.next_obs)
        log_pi = tau * F.log_softmax(q_now / tau, dim=1)
        bonus = alpha * log_pi.gather(1, b.actions[:, None]).squeeze(1).clamp(l0, 0)
        next_log_pi = tau * F.log_softmax(q_next / tau, dim=1)
        soft = (F.softmax(q_next / tau, dim=1) * (q_next - next_log_pi)).sum(1)
        y = b.rewards + bonus + alive(b) * soft
    loss = F.smooth_l1_loss(q, y, reduction="none") if learner.kind == "huber" else F.mse_loss(q, y, reduction="none")
    return (loss * b.weights).mean()


def iqn_floor(learner, online, target, b):
    batch, n, n_prime, k = len(b.actions), learner.tau_samples, learner.tau_prime_samples, learner.quantile_samples
    taus = torch.rand(batch, n)
    z = online(b.obs, taus)[torch.arange(batch), b.actions]  # (B, N)
    with torch.no_grad():
        both = target(b.next_obs, torch.rand(batch, n_prime + k))
        best = both[..., n_prime:].mean(-1).argmax(1)
        next_z = both[..., :n_prime][torch.arange(batch), best]
        targets = b.rewards[:, None] + alive(b)[:, None] * next_z
    return (pairwise_quantile_loss(z, targets, taus[..., None], learner.kappa) * b.weights).mean()


FLOORS: dict[str, Callable] = {
    "dqn": dqn_floor,
    "c51": c51_floor,
    "qr_dqn": qr_dqn_floor,
    "munchausen": munchausen_floor,
    "iqn": iqn_floor,
}


def floor_step(setting: str, agent: StepHarness, name: str) -> Callable[[object], object]:
    """The floor's gradient step for ``name`` on ``setting``: a function of a batch."""
    learner = agent.agent.learner
    obs_shape, n_actions = agent.agent.obs_spec.shape, agent.n_actions
    cosines = learner.embedding_dim if name == "iqn" else 0
    online = PlainNet(setting, obs_shape, n_actions, 1 if name == "iqn" else learner.outputs, cosines)
    target = PlainNet(setting, obs_shape, n_actions, 1 if name == "iqn" else learner.outputs, cosines)
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-3, fused=True)  # one kernel: the arithmetic alone
    rule = FLOORS[name]

    def step(batch) -> float:
        optimizer.zero_grad()
        loss = rule(learner, online, target, batch)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_gradient_step_of_each_learner_against_its_floor(benchmark, setting):
    _, network, _, block, rounds = SETTINGS[setting]
    if setting == "minatar":
        require("minatar")  # with .[dev] alone: the floors on CartPole only
    info: dict = {}
    timed = None
    with single_thread():
        for name in LEARNERS:
            agent = harness(setting, name)
            assert agent.config.network.name == network
            batch = agent.replay.sample(agent.config.agent.batch_size)
            floor = floor_step(setting, agent, name)
            steps = {
                "dqnbench": lambda a=agent, b=batch: a.agent.gradient_step(b),
                "floor": lambda f=floor, b=batch: f(b),
            }
            best = best_times(steps, 1, 1) if benchmark.disabled else best_times(steps, rounds, block)
            info[f"best_us_{setting}_{name}"] = round(best["dqnbench"] * 1e6, 1)
            info[f"floor_us_{setting}_{name}"] = round(best["floor"] * 1e6, 1)
            info[f"ratio_{setting}_{name}"] = round(best["dqnbench"] / best["floor"], 2)
            info[f"learn_path_{setting}_{name}"] = learn_path(agent.agent.learner, agent.agent.nets)
            if name == "iqn":
                timed = steps["dqnbench"]
                described = agent.describe(f"gradient step of iqn on {network} (ratios: over floors)", kind="learner")
                info = {**described, **info}
        benchmark.extra_info.update(info)
        losses, _ = benchmark(timed)
    assert torch.isfinite(losses).all()
    print({key: value for key, value in info.items() if key.startswith(("ratio", "best", "floor", "learn_path"))})
