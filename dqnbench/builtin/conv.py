"""Built-in convolutional Q-networks ``nature_cnn`` and ``minatar_cnn`` for image observations.

``nature_cnn`` is the network of Mnih et al. (2015), "Human-level control
through deep reinforcement learning", Nature 518: on 84×84 frames (a stack of 4)
scaled from uint8 to [0, 1], three ReLU convolutions 32×8×8 stride 4, 64×4×4
stride 2 and 64×3×3 stride 1, a ReLU layer of 512 units and a linear Q head.

``minatar_cnn`` is the DQN network of Young & Tian (2019), "MinAtar: An
Atari-Inspired Testbed for Thorough and Reproducible Reinforcement Learning
Experiments" (arXiv:1903.03176): on MinAtar's 10×10 boolean channels, one ReLU
convolution 16×3×3 stride 1, a ReLU layer of 128 units and a linear Q head.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.conv``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dqnbench.builtin.dueling import dueling as dueling_network
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.noisy import noisy as noisy_network
from dqnbench.nn import Conv2d, UnsupportedObservations, as_float, conv_output_shape, obs_shape
from dqnbench.plugin.hookspecs import hookimpl

#: ``(out channels, kernel, stride)`` of each convolution
ConvLayers = tuple[tuple[int, int, int], ...]

NATURE_CONVS: ConvLayers = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
MINATAR_CONVS: ConvLayers = ((16, 3, 1),)


def smallest_image(layers: ConvLayers) -> int:
    """The smallest side an image needs for every convolution of ``layers`` to leave at least one pixel."""
    side = 1
    for _, kernel, stride in reversed(layers):
        side = (side - 1) * stride + kernel
    return side


def image_shape(obs_dim: int, name: str, layers: ConvLayers) -> tuple[int, int, int]:
    """``(C, H, W)`` of the observations (``(H, W)`` as one channel); a user error for vectors or small images."""
    shape = obs_shape(obs_dim)
    if len(shape) not in (2, 3):
        raise UnsupportedObservations(
            f"{name} needs image observations (C, H, W), got {obs_dim!r}; "
            "for vector observations choose the mlp, dueling or noisy network"
        )
    channels, height, width = shape if len(shape) == 3 else (1, *shape)
    side = smallest_image(layers)
    if height < side or width < side:
        raise UnsupportedObservations(
            f"{name} needs images of at least {side}×{side}, got {height}×{width} ({obs_dim!r})"
            + ("; minatar_cnn fits small images" if side > smallest_image(MINATAR_CONVS) else "")
        )
    return channels, height, width


class ConvQNetwork(nn.Module):
    """``obs (…, C, H, W) → convs (ReLU each) → flatten → head`` where the head is a flat Q-network.

    ``convs`` holds :class:`dqnbench.nn.Conv2d` + ReLU pairs; ``head`` is an
    ``mlp``, ``dueling`` or ``noisy`` network on the flattened features, whose
    ``head.body`` ends at the penultimate activation (what embedding plots hook)
    and whose output is ``(…, n_actions)`` or ``(…, n_actions, outputs)``.
    """

    def __init__(
        self, image: tuple[int, int, int], layers: ConvLayers, head: nn.Module, one_channel: bool = False
    ) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        fan_in = image[0]
        for channels, kernel, stride in layers:
            convs += [Conv2d(fan_in, channels, kernel, stride), nn.ReLU()]
            fan_in = channels
        self.convs = nn.Sequential(*convs)
        self.head = head
        #: ``(H, W)`` observations get their channel axis in ``forward``
        self.one_channel = one_channel

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = as_float(obs)
        if self.one_channel:
            x = x.unsqueeze(-3)
        return self.head(self.convs(x).flatten(-3))

    @property
    def feature_dim(self) -> int:
        """The width of the flat head's last hidden layer (the features split, :mod:`dqnbench.agent.heads`)."""
        return self.head.feature_dim

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Convolutions, then the flat head's hidden layers: ``(…, B, feature_dim)``."""
        x = as_float(obs)
        if self.one_channel:
            x = x.unsqueeze(-3)
        return self.head.features(self.convs(x).flatten(-3))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The flat head's last layer(s) on features ``(…, R, feature_dim)``."""
        return self.head.from_features(features)


def conv_q_network(
    name: str,
    layers: ConvLayers,
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int],
    dueling: bool,
    noisy: bool,
    sigma0: float,
    outputs: int,
) -> ConvQNetwork:
    """A :class:`ConvQNetwork` of ``layers`` with the head the flags choose (the flat factories check ``hidden``)."""
    for flag, value in (("dueling", dueling), ("noisy", noisy)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be true or false, got {value!r}")
    channels, height, width = image_shape(obs_dim, name, layers)
    size = (height, width)
    for _, kernel, stride in layers:
        size = conv_output_shape(size, kernel, stride)
    features = layers[-1][0] * math.prod(size)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a list of positive integers, got {hidden!r}")
    hidden = tuple(hidden)
    if noisy:
        head = noisy_network(features, n_actions, hidden, sigma0, dueling, outputs)
    elif dueling:
        head = dueling_network(features, n_actions, hidden, stream_hidden=0, outputs=outputs)
    else:
        head = mlp(features, n_actions, hidden, outputs=outputs)
    return ConvQNetwork((channels, height, width), layers, head, one_channel=len(obs_shape(obs_dim)) == 2)


def nature_cnn(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (512,),
    dueling: bool = False,
    noisy: bool = False,
    sigma0: float = 0.5,
    outputs: int = 1,
) -> ConvQNetwork:
    """The Nature DQN network (Mnih et al. 2015): convs 32×8×8/4, 64×4×4/2, 64×3×3/1, then 512 units.

    :param hidden: widths of the ReLU layers after the convolutions, ``[512]`` in the paper.
    :param dueling: value and advantage streams on the last hidden layer (Wang et al. 2016).
    :param noisy: NoisyNet layers after the convolutions (Fortunato et al. 2018); pair with the ``greedy`` exploration.
    :param sigma0: σ₀ of the noisy layers (used with ``noisy = true``), as in the ``noisy`` network.
    :param outputs: outputs per action, set by the loop for distributional learners (not a grid param).
    """
    return conv_q_network("nature_cnn", NATURE_CONVS, obs_dim, n_actions, hidden, dueling, noisy, sigma0, outputs)


def minatar_cnn(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (128,),
    dueling: bool = False,
    noisy: bool = False,
    sigma0: float = 0.5,
    outputs: int = 1,
) -> ConvQNetwork:
    """The MinAtar DQN network (Young & Tian 2019): conv 16×3×3/1, then 128 units.

    :param hidden: widths of the ReLU layers after the convolution, ``[128]`` in the paper.
    :param dueling: value and advantage streams on the last hidden layer (Wang et al. 2016).
    :param noisy: NoisyNet layers after the convolution (Fortunato et al. 2018); pair with the ``greedy`` exploration.
    :param sigma0: σ₀ of the noisy layers (used with ``noisy = true``), as in the ``noisy`` network.
    :param outputs: outputs per action, set by the loop for distributional learners (not a grid param).
    """
    return conv_q_network("minatar_cnn", MINATAR_CONVS, obs_dim, n_actions, hidden, dueling, noisy, sigma0, outputs)


@hookimpl
def dqnbench_networks() -> dict:
    return {"nature_cnn": nature_cnn, "minatar_cnn": minatar_cnn}
