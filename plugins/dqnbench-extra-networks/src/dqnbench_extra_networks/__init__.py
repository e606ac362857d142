"""LayerNorm and residual Q-networks for dqnbench: ``layernorm_mlp`` and ``residual_mlp``.

The networks are plain ``torch.nn.Module`` classes in :mod:`.networks`;
:mod:`.plugin` hands their factories to dqnbench through the ``dqnbench``
entry point declared in ``pyproject.toml``.
"""

from importlib.metadata import PackageNotFoundError, version

from dqnbench_extra_networks.networks import LayerNormMLP, ResidualMLP, layernorm_mlp, residual_mlp

try:
    __version__ = version("dqnbench-extra-networks")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["LayerNormMLP", "ResidualMLP", "__version__", "layernorm_mlp", "residual_mlp"]
