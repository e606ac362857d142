"""The calibration benchmark: a fixed torch + NumPy workload timed in the same session as the suite.

``dqnbench bench-compare`` divides every benchmark's time by this one's, so a
CI runner that is faster or slower than the baseline's does not look like a
regression (see :mod:`dqnbench.devtools.benchcompare`). It must run in every session
whose JSON report is compared.
"""

from __future__ import annotations

import pytest

from dqnbench.devtools.pytest_plugin import benchmark_calibration


@pytest.mark.benchmark(group="calibration")
def test_calibration(benchmark):
    benchmark_calibration(benchmark)
