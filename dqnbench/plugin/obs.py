"""What a network and a replay learn about observations: :class:`ObsSpec`.

v1 factories take ``obs_dim: int``, the flat size of a float32 vector. v2
factories need the shape and dtype as well (MinAtar's ``(4, 10, 10)`` bools,
Atari's ``(4, 84, 84)`` uint8 frames). An :class:`ObsSpec` is both: an ``int``
equal to the flat size, so ``nn.Linear(obs_dim, …)`` and
``np.zeros((capacity, obs_dim))`` in a v1 plugin keep working unchanged on vector
observations, and an object with ``.shape`` and ``.dtype`` for v2 code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class ObsSpec(int):
    """The shape and dtype of one observation; its ``int`` value is the flat size ``prod(shape)``.

    >>> spec = ObsSpec((4, 10, 10), "bool")
    >>> spec == 400, spec.shape, spec.dtype
    (True, (4, 10, 10), dtype('bool'))
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    #: frames stacked on the leading axis (1: no frame stack)
    frames: int

    def __new__(cls, shape: tuple[int, ...] | int, dtype: Any = np.float32, frames: int = 1) -> ObsSpec:
        shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
        frames = int(frames)
        if frames < 1 or (frames > 1 and (len(shape) < 2 or shape[0] != frames)):
            raise ValueError(f"frames={frames} must be 1, or the length of the leading axis of shape {shape}")
        self = super().__new__(cls, math.prod(shape))
        self.shape, self.dtype, self.frames = shape, np.dtype(dtype), frames
        return self

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one stored frame: the observation without its stack axis (the whole shape when unstacked)."""
        return self.shape[1:] if self.frames > 1 else self.shape

    @property
    def nbytes(self) -> int:
        """Bytes of one observation in its own dtype."""
        return int(self) * self.dtype.itemsize

    def __reduce__(self) -> tuple[Any, ...]:
        return ObsSpec, (self.shape, self.dtype.str, self.frames)

    def __repr__(self) -> str:
        frames = f", frames={self.frames}" if self.frames > 1 else ""
        return f"ObsSpec(shape={self.shape}, dtype={self.dtype.name}{frames})"

    __str__ = __repr__
