"""Reference scores that put returns of different environments on one scale.

A normalized score is ``(return − random) / (reference − random)``: 0 is a
uniform-random policy, 1 the reference (Agarwal et al. 2021 aggregate these
across tasks). Sources, per family:

- **Atari 2600 (ALE), 57 games**: random and professional human tester scores
  (``reference`` = human) as tabulated by Mnih et al. (2015), "Human-level
  control through deep reinforcement learning", Nature 518, Extended Data
  Table 2, completed to 57 games by Badia et al. (2020), "Agent57: Outperforming
  the Atari Human Benchmark", ICML, appendix score tables (the random and
  human values DQN Zoo and rliable use). Episodes start after up to 30 no-ops.
- **Classic control**: ``reference`` is gymnasium's ``spec.reward_threshold``
  ("solved"); ``random`` was **measured** for dqnbench: the mean return of a
  uniform-random policy over 1000 episodes (``env.reset(seed=i)`` for i in
  0..999, actions from ``numpy.random.default_rng(0)``), gymnasium 1.x.
- **MinAtar** (Young & Tian 2019, "MinAtar: An Atari-inspired Testbed for More
  Efficient Reinforcement Learning Experiments", arXiv:1903.03176): ``random``
  measured the same way over 300 episodes. The paper reports DQN only as
  learning curves (no table), so there is no built-in ``reference``: give one
  in the grid's ``[scores]`` table to aggregate MinAtar games.

A grid's own ``[scores."ENV"] random = …, reference = …`` overrides these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceScores:
    """The two anchors of a normalized score, and where they come from."""

    random: float
    reference: float | None
    source: str

    def normalize(self, value: float) -> float:
        """``(value − random) / (reference − random)``; NaN without a reference."""
        if self.reference is None or self.reference == self.random:
            return float("nan")
        return (value - self.random) / (self.reference - self.random)


#: game → (random, human), the 57 games of the ALE benchmark (Mnih et al. 2015; Badia et al. 2020).
ATARI_RANDOM_HUMAN: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7), "Amidar": (5.8, 1719.5), "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3), "Asteroids": (719.1, 47388.7), "Atlantis": (12850.0, 29028.1),
    "BankHeist": (14.2, 753.1), "BattleZone": (2360.0, 37187.5), "BeamRider": (363.9, 16926.5),
    "Berzerk": (123.7, 2630.4), "Bowling": (23.1, 160.7), "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5), "Centipede": (2090.9, 12017.0), "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4), "Defender": (2874.5, 18688.9), "DemonAttack": (152.1, 1971.0),
    "DoubleDunk": (-18.6, -16.4), "Enduro": (0.0, 860.5), "FishingDerby": (-91.7, -38.7),
    "Freeway": (0.0, 29.6), "Frostbite": (65.2, 4334.7), "Gopher": (257.6, 2412.5),
    "Gravitar": (173.0, 3351.4), "Hero": (1027.0, 30826.4), "IceHockey": (-11.2, 0.9),
    "Jamesbond": (29.0, 302.8), "Kangaroo": (52.0, 3035.0), "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3), "MontezumaRevenge": (0.0, 4753.3), "MsPacman": (307.3, 6951.6),
    "NameThisGame": (2292.3, 8049.0), "Phoenix": (761.4, 7242.6), "Pitfall": (-229.4, 6463.7),
    "Pong": (-20.7, 14.6), "PrivateEye": (24.9, 69571.3), "Qbert": (163.9, 13455.0),
    "Riverraid": (1338.5, 17118.0), "RoadRunner": (11.5, 7845.0), "Robotank": (2.2, 11.9),
    "Seaquest": (68.4, 42054.7), "Skiing": (-17098.1, -4336.9), "Solaris": (1236.3, 12326.7),
    "SpaceInvaders": (148.0, 1668.7), "StarGunner": (664.0, 10250.0), "Surround": (-10.0, 6.5),
    "Tennis": (-23.8, -8.3), "TimePilot": (3568.0, 5229.2), "Tutankham": (11.4, 167.6),
    "UpNDown": (533.4, 11693.2), "Venture": (0.0, 1187.5), "VideoPinball": (16256.9, 17667.9),
    "WizardOfWor": (563.5, 4756.5), "YarsRevenge": (3092.9, 54576.9), "Zaxxon": (32.5, 9173.3),
}  # fmt: skip

#: env id → mean return of a uniform-random policy, measured as the module docstring says.
MEASURED_RANDOM: dict[str, float] = {
    "CartPole-v0": 22.2,
    "CartPole-v1": 22.2,
    "Acrobot-v1": -499.1,
    "MountainCar-v0": -200.0,
}

#: MinAtar env id → mean return of a uniform-random policy (300 episodes, measured as above; no reference).
MINATAR_RANDOM: dict[str, float] = {
    "MinAtar/Asterix-v1": 0.50,
    "MinAtar/Breakout-v1": 0.41,
    "MinAtar/Freeway-v1": 0.43,
    "MinAtar/Seaquest-v1": 0.09,
    "MinAtar/SpaceInvaders-v1": 4.25,
}

ATARI_SOURCE = "Atari random/human (Mnih et al. 2015; Badia et al. 2020)"
CLASSIC_SOURCE = "random measured (1000 episodes); reference = gymnasium reward_threshold"
MINATAR_SOURCE = "random measured (300 episodes); Young & Tian (2019) publish no DQN table"


def atari_game(env_id: str) -> str | None:
    """The ALE game of an env id: ``ALE/Pong-v5``, ``PongNoFrameskip-v4`` → ``Pong``; None otherwise."""
    name = env_id.split("/", 1)[1] if env_id.startswith("ALE/") else env_id
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    for game in ATARI_RANDOM_HUMAN:
        if game.lower() == name.lower():
            return game
    return None


def builtin_scores(env_id: str | None) -> ReferenceScores | None:
    """The built-in anchors of ``env_id`` (see the module docstring), or None if dqnbench has none."""
    if not env_id:
        return None
    if not env_id.startswith("MinAtar/") and (game := atari_game(env_id)) is not None:
        random, human = ATARI_RANDOM_HUMAN[game]
        return ReferenceScores(random, human, ATARI_SOURCE)
    if env_id in MEASURED_RANDOM:
        from dqnbench.analysis.cells import env_threshold

        return ReferenceScores(MEASURED_RANDOM[env_id], env_threshold(env_id), CLASSIC_SOURCE)
    if env_id in MINATAR_RANDOM:
        return ReferenceScores(MINATAR_RANDOM[env_id], None, MINATAR_SOURCE)
    return None
