"""The math of the new learners on hand examples and against slow reference loops.

C51's categorical projection (Bellemare et al. 2017, Algorithm 1), QR-DQN's quantile Huber loss (Dabney et al.
2018, eq. 10) and Munchausen-DQN's target (Vieillard et al. 2020, eq. 3).
"""

from __future__ import annotations

import math

import pytest
import torch

from dqnbench.agent.distributional import (
    categorical_projection,
    quantile_huber_loss,
    quantile_huber_loss_and_grad,
    quantile_huber_loss_pairwise,
    quantile_midpoints,
)
from dqnbench.agent.losses import dqn_targets, munchausen_targets, scaled_log_softmax

# --------------------------------------------------------------------------- C51's projection


def reference_projection(support, probs, rewards, discounts, terminated):
    """Algorithm 1 of Bellemare et al. (2017), one sample and one atom at a time, in float64."""
    atoms = len(support)
    v_min, v_max = float(support[0]), float(support[-1])
    delta = (v_max - v_min) / (atoms - 1)
    out = torch.zeros(probs.shape, dtype=torch.float64)
    for b in range(probs.shape[0]):
        for j in range(atoms):
            bootstrap = 0.0 if bool(terminated[b]) else float(discounts[b])
            tz = min(max(float(rewards[b]) + bootstrap * float(support[j]), v_min), v_max)
            position = (tz - v_min) / delta
            low, high = math.floor(position), math.ceil(position)
            p = float(probs[b, j])
            if low == high:  # on an atom: all of it there (the case the pseudo-code loses)
                out[b, low] += p
            else:
                out[b, low] += p * (high - position)
                out[b, high] += p * (position - low)
    return out


def project(probs, rewards, discounts, terminated, support=(-1.0, 0.0, 1.0)):
    support = torch.tensor(support)
    batch = torch.tensor([probs])
    return categorical_projection(
        support, batch, torch.tensor([rewards]), torch.tensor([discounts]), torch.tensor([terminated])
    )[0]


@pytest.mark.parametrize(
    "rewards, discounts, terminated, expected",
    [
        (0.5, 1.0, False, [0.1, 0.35, 0.55]),  # shifted atoms -0.5, 0.5, 1.5 → clipped to 1
        (1.0, 1.0, False, [0.0, 0.2, 0.8]),  # shifted atoms 0, 1, 2: exactly on atoms (and v_max)
        (-3.0, 1.0, False, [1.0, 0.0, 0.0]),  # everything below v_min lands on v_min
        (0.25, 0.99, True, [0.0, 0.75, 0.25]),  # terminal: all mass next to r, whatever Z' was
        (0.0, 0.5, False, [0.1, 0.75, 0.15]),  # n-step γⁿ = 0.5 shrinks the distribution
        (-1.0, 0.0, False, [1.0, 0.0, 0.0]),  # a zero discount: all mass at r, on the first atom
    ],
)
def test_projection_hand_examples(rewards, discounts, terminated, expected):
    projected = project([0.2, 0.5, 0.3], rewards, discounts, terminated)
    torch.testing.assert_close(projected, torch.tensor(expected), atol=1e-6, rtol=0)


def test_projection_matches_the_reference_loop_for_one_run_and_for_members():
    generator = torch.Generator().manual_seed(0)
    support = torch.linspace(-10.0, 10.0, 51)
    lead = (3, 40)
    probs = torch.softmax(torch.randn(*lead, 51, generator=generator) * 2, dim=-1)
    rewards = torch.randn(lead, generator=generator) * 4
    rewards[:, :8] = torch.tensor([0.0, 0.4, -0.8, 10.0, -10.0, 2.0, 12.0, -0.4])  # atoms, the ends, beyond
    discounts = torch.full(lead, 0.99**3)  # n-step
    discounts[:, :8] = 1.0  # with discount 1 and a reward on the grid every shifted atom falls on an atom
    discounts[:, -5:] = 0.5
    terminated = torch.rand(lead, generator=generator) < 0.25
    projected = categorical_projection(support, probs, rewards, discounts, terminated)
    assert projected.shape == probs.shape
    for k in range(lead[0]):
        expected = reference_projection(support, probs[k], rewards[k], discounts[k], terminated[k])
        torch.testing.assert_close(projected[k].double(), expected, atol=2e-6, rtol=0)
        one_run = categorical_projection(support, probs[k], rewards[k], discounts[k], terminated[k])
        torch.testing.assert_close(one_run, projected[k])
    torch.testing.assert_close(projected.sum(dim=-1), torch.ones(lead))  # no mass lost or made


def test_a_support_per_member_projects_each_member_on_its_own_atoms_exactly_as_alone():
    """A fused group's C51 members may have their own v_min/v_max: a ``(K, 1, N)`` support, member k's rows
    projected on member k's atoms, with the numbers member k gets alone (bit for bit)."""
    generator = torch.Generator().manual_seed(3)
    supports = [torch.linspace(-10.0, 10.0, 21), torch.linspace(-2.0, 7.5, 21), torch.linspace(0.0, 200.0, 21)]
    lead = (3, 30)
    probs = torch.softmax(torch.randn(*lead, 21, generator=generator), dim=-1)
    rewards, discounts = torch.randn(lead, generator=generator) * 5, torch.full(lead, 0.95)
    terminated = torch.rand(lead, generator=generator) < 0.2
    projected = categorical_projection(torch.stack(supports).unsqueeze(1), probs, rewards, discounts, terminated)
    for k, support in enumerate(supports):
        alone = categorical_projection(support, probs[k], rewards[k], discounts[k], terminated[k])
        assert torch.equal(projected[k], alone)
        expected = reference_projection(support, probs[k], rewards[k], discounts[k], terminated[k])
        torch.testing.assert_close(projected[k].double(), expected, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="broadcast"):
        categorical_projection(torch.stack(supports[:2]).unsqueeze(1), probs, rewards, discounts, terminated)


def test_projection_takes_float_terminated_flags_like_bool_ones():
    support = torch.linspace(-5.0, 5.0, 11)
    probs = torch.softmax(torch.randn(6, 11), dim=-1)
    rewards, discounts = torch.randn(6), torch.full((6,), 0.9)
    flags = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(
        categorical_projection(support, probs, rewards, discounts, flags),
        categorical_projection(support, probs, rewards, discounts, flags.float()),
    )


def test_projection_checks_shapes():
    support = torch.linspace(-1.0, 1.0, 5)
    probs = torch.full((4, 5), 0.2)
    with pytest.raises(ValueError, match="rewards must have shape"):
        categorical_projection(support, probs, torch.zeros(4, 1), torch.ones(4), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="probs must have shape"):
        categorical_projection(support, torch.full((4, 3), 0.3), torch.zeros(4), torch.ones(4), torch.zeros(4))
    with pytest.raises(ValueError, match="support"):
        categorical_projection(torch.zeros(1), probs[:, :1], torch.zeros(4), torch.ones(4), torch.zeros(4))


# --------------------------------------------------------------------------- QR-DQN's loss


@pytest.mark.parametrize(
    "quantiles, targets, kappa, expected",
    [
        # τ̂ = 0.5; u = 2 (linear: 0.5 · (2 − 0.5)) and u = −0.5 (quadratic: 0.5 · 0.125), mean over targets
        ([0.0], [2.0, -0.5], 1.0, (0.5 * 1.5 + 0.5 * 0.125) / 2),
        # τ̂ = 0.25, 0.75; u = 0.5 for the first (weight τ̂) and −0.5 for the second (weight 1 − τ̂), summed
        ([0.0, 1.0], [0.5], 1.0, 0.25 * 0.125 + 0.25 * 0.125),
        # κ = 2: |u| = 3 is linear, L = 2 · (3 − 1) = 4, divided by κ, weighted 0.5
        ([0.0], [3.0], 2.0, 0.5 * 4.0 / 2.0),
        # a target equal to its quantile costs nothing
        ([1.5], [1.5], 1.0, 0.0),
    ],
)
def test_quantile_huber_loss_hand_examples(quantiles, targets, kappa, expected):
    theta, target = torch.tensor([quantiles]), torch.tensor([targets])
    taus = quantile_midpoints(len(quantiles))
    for fn in (quantile_huber_loss_pairwise, quantile_huber_loss):
        torch.testing.assert_close(fn(theta, target, taus, kappa), torch.tensor([expected]))


def test_quantile_midpoints_are_the_papers_levels():
    torch.testing.assert_close(quantile_midpoints(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize("kappa", [1.0, 0.3, 5.0])
def test_sorted_quantile_loss_and_gradient_equal_the_pairwise_definition(kappa):
    generator = torch.Generator().manual_seed(1)
    lead, n, m = (3, 16), 12, 20
    theta = (torch.randn(*lead, n, generator=generator) * 3).requires_grad_()
    targets = torch.randn(*lead, m, generator=generator) * 3 + 40.0  # far from 0: centring keeps precision
    with torch.no_grad():  # ties: targets equal to quantiles, at exactly ±κ, and repeated targets
        theta[..., 0] = targets[..., 0] - 40.0
        targets[..., 1] = targets[..., 2]
        targets[..., 3] = theta[..., 1] + 40.0 + kappa
        targets[..., 4] = theta[..., 2] + 40.0 - kappa
        theta += 40.0
    taus = quantile_midpoints(n)
    expected = quantile_huber_loss_pairwise(theta, targets, taus, kappa)
    (expected_grad,) = torch.autograd.grad(expected.sum(), theta, retain_graph=True)
    losses, grad = quantile_huber_loss_and_grad(theta.detach(), targets, taus, kappa)
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    fast = quantile_huber_loss(theta, targets, taus, kappa)  # the autograd form used by the learner's loss
    (fast_grad,) = torch.autograd.grad((fast * torch.arange(16.0)).sum(), theta)
    (slow_grad,) = torch.autograd.grad((expected * torch.arange(16.0)).sum(), theta)
    torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-5, atol=1e-6)


def test_a_kappa_per_member_gives_each_member_its_own_loss_and_gradient_exactly_as_alone():
    """A fused group's QR-DQN members may have their own κ: a ``(K, 1)`` tensor over their ``(K, B)`` samples."""
    generator = torch.Generator().manual_seed(4)
    kappas = [1.0, 0.2, 4.0]
    theta = (torch.randn(3, 10, 8, generator=generator) * 2).requires_grad_()
    targets = torch.randn(3, 10, 8, generator=generator) * 2
    taus = quantile_midpoints(8)
    kappa = torch.tensor(kappas).unsqueeze(-1)
    losses, grad = quantile_huber_loss_and_grad(theta.detach(), targets, taus, kappa)
    expected = quantile_huber_loss_pairwise(theta, targets, taus, kappa)
    (expected_grad,) = torch.autograd.grad(expected.sum(), theta)
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    for k, value in enumerate(kappas):
        alone = quantile_huber_loss_and_grad(theta.detach()[k], targets[k], taus, value)
        torch.testing.assert_close((losses[k], grad[k]), alone, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(expected[k], quantile_huber_loss_pairwise(theta[k], targets[k], taus, value))
    # another member's κ never moves a member's numbers, not by a bit
    other = quantile_huber_loss_and_grad(theta.detach(), targets, taus, torch.tensor([[1.0], [3.0], [4.0]]))
    assert torch.equal(other[0][[0, 2]], losses[[0, 2]]) and torch.equal(other[1][[0, 2]], grad[[0, 2]])
    assert not torch.equal(other[0][1], losses[1])
    with pytest.raises(ValueError, match="kappa must be > 0"):
        quantile_huber_loss(theta, targets, taus, torch.tensor([[1.0], [0.0], [2.0]]))
    with pytest.raises(ValueError, match="broadcast"):
        quantile_huber_loss(theta, targets, taus, torch.ones(2, 1))


def test_quantile_loss_checks_shapes_and_kappa():
    taus = quantile_midpoints(3)
    with pytest.raises(ValueError, match="must be"):
        quantile_huber_loss(torch.zeros(4, 3), torch.zeros(5, 3), taus)
    with pytest.raises(ValueError, match="taus"):
        quantile_huber_loss(torch.zeros(4, 3), torch.zeros(4, 3), quantile_midpoints(2))
    with pytest.raises(ValueError, match="kappa"):
        quantile_huber_loss_pairwise(torch.zeros(4, 3), torch.zeros(4, 3), taus, 0.0)


def test_a_non_finite_quantile_gives_a_non_finite_loss_not_an_error():
    taus = quantile_midpoints(3)
    losses = quantile_huber_loss(torch.tensor([[0.0, float("nan"), 1.0], [0.0, 1.0, 2.0]]), torch.zeros(2, 3), taus)
    assert not torch.isfinite(losses[0]) and torch.isfinite(losses[1])


# --------------------------------------------------------------------------- Munchausen's target


def test_scaled_log_softmax_is_tau_log_pi_without_overflow():
    q = torch.tensor([[1000.0, 0.0], [1.0, 0.0]])
    out = scaled_log_softmax(q, 0.03)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], 0.03 * torch.log_softmax(q[1] / 0.03, dim=-1))


def test_munchausen_target_on_a_hand_example():
    # τ = 1: τ log π(·|s) = log softmax([1, 0]) = [1 − log(1 + e), −log(1 + e)] = [−0.3133, −1.3133]
    # action 1's −1.3133 is clipped to l0 = −1 (bonus −0.9 with α = 0.9); action 0's is kept (bonus −0.2820)
    # s': q = [0, 0], π = [½, ½], soft value Σ π (q − τ log π) = log 2 = 0.6931
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    next_q = torch.zeros(3, 2)
    targets = munchausen_targets(
        rewards=torch.tensor([1.0, 1.0, 1.0]),
        discounts=torch.tensor([0.9, 0.9, 0.9]),
        terminated=torch.tensor([False, False, True]),
        actions=torch.tensor([1, 0, 0]),
        q_target=q,
        next_q_target=next_q,
        alpha=0.9,
        tau=1.0,
        l0=-1.0,
    )
    log2, log_pi0 = math.log(2.0), 1.0 - math.log(1.0 + math.e)
    expected = torch.tensor([1.0 - 0.9 + 0.9 * log2, 1.0 + 0.9 * log_pi0 + 0.9 * log2, 1.0 + 0.9 * log_pi0])
    torch.testing.assert_close(targets, expected)


def test_munchausen_without_bonus_and_with_a_cold_policy_is_dqn():
    generator = torch.Generator().manual_seed(2)
    lead = (2, 32)
    q, next_q = torch.randn(*lead, 3, generator=generator), torch.randn(*lead, 3, generator=generator)
    rewards, discounts = torch.randn(lead, generator=generator), torch.full(lead, 0.97)
    terminated, actions = torch.rand(lead, generator=generator) < 0.3, torch.randint(3, lead, generator=generator)
    soft = munchausen_targets(rewards, discounts, terminated, actions, q, next_q, alpha=0.0, tau=1e-4, l0=-1.0)
    torch.testing.assert_close(soft, dqn_targets(rewards, discounts, terminated, next_q), atol=1e-3, rtol=0)


def test_munchausen_target_checks_shapes():
    with pytest.raises(ValueError, match="actions must have shape"):
        munchausen_targets(torch.zeros(4), torch.ones(4), torch.zeros(4), torch.zeros(5), torch.zeros(4, 2),
                           torch.zeros(4, 2))  # fmt: skip
    with pytest.raises(ValueError, match="next_q_target"):
        munchausen_targets(torch.zeros(4), torch.ones(4), torch.zeros(4), torch.zeros(4), torch.zeros(4, 2),
                           torch.zeros(4, 3))  # fmt: skip


def test_merged_sort_counts_equal_a_binary_search_with_ties_and_non_finite_values():
    from dqnbench.agent.distributional import _counts_below

    generator = torch.Generator().manual_seed(2)
    targets = (torch.randn(2, 5, 40, generator=generator, dtype=torch.float64) * 1e3).round()  # many exact ties
    targets[0, 0, :5] = 0.0
    targets, _ = targets.sort(dim=-1)
    bounds = torch.cat([targets[..., ::3] + 0.5, (torch.randn(2, 5, 90, generator=generator) * 1e3).double()], -1)
    expected = torch.searchsorted(targets, bounds)
    counts = _counts_below(targets, bounds)
    tied = (bounds.unsqueeze(-1) == targets.unsqueeze(-2)).sum(-1)  # a bound equal to targets may count them or not
    assert ((counts >= expected) & (counts <= expected + tied)).all()
    assert (counts[tied == 0] == expected[tied == 0]).all()
    bounds[0, 0, 0], bounds[0, 0, 1], targets[1, 1, -1] = float("nan"), float("-inf"), float("inf")
    counts = _counts_below(targets, bounds)  # no error, and counts stay in range
    assert counts.min() >= 0 and counts.max() <= targets.shape[-1] and counts[0, 0, 1] == 0


@pytest.mark.parametrize("lead", [(7,), (3, 5)])
def test_quantile_loss_at_the_papers_200_quantiles_equals_the_pairwise_definition(lead):
    generator = torch.Generator().manual_seed(3)
    theta = (torch.randn(*lead, 200, generator=generator) * 5).requires_grad_()
    targets = torch.randn(*lead, 200, generator=generator) * 5 + 2.0
    taus = quantile_midpoints(200)
    expected = quantile_huber_loss_pairwise(theta, targets, taus)
    (expected_grad,) = torch.autograd.grad(expected.sum(), theta)
    for _ in range(2):  # the second call reads the cached coefficients
        losses, grad = quantile_huber_loss_and_grad(theta.detach(), targets, taus)
        torch.testing.assert_close(losses, expected.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    other = quantile_midpoints(200) * 0.5  # another taus tensor: its own coefficients
    torch.testing.assert_close(
        quantile_huber_loss_and_grad(theta.detach(), targets, other)[0],
        quantile_huber_loss_pairwise(theta.detach(), targets, other),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_non_finite_target_gives_a_non_finite_loss_not_an_error():
    taus = quantile_midpoints(3)
    for bad in (float("nan"), float("inf")):
        targets = torch.tensor([[0.0, bad, 1.0], [0.0, 1.0, 2.0]])
        losses = quantile_huber_loss(torch.zeros(2, 3), targets, taus)
        assert not torch.isfinite(losses[0]) and torch.isfinite(losses[1])


def test_merged_sort_counts_keep_every_code_with_zeros_and_denormals_flushed():
    """±0 with a code in its low bits would be a denormal key, which a sort with denormals flushed may duplicate."""
    from dqnbench.agent.distributional import _counts_below
    from dqnbench.agent.numerics import flushing_denormals

    targets = torch.tensor([[-1.0, -0.0, 0.0, 0.0, 2.0] * 8] * 3)
    bounds = torch.tensor([[0.0, -0.0, 0.0, 1.0, -1.0, 0.0] * 20] * 3)
    with flushing_denormals():
        counts = _counts_below(targets, bounds)
        theta = torch.zeros(3, 40)  # quantiles at 0 and targets at 0: zero keys among bounds and targets
        losses, grad = quantile_huber_loss_and_grad(theta, targets, quantile_midpoints(40))
    pairs = targets.unsqueeze(-2), bounds.unsqueeze(-1)
    below, upto = (pairs[0] < pairs[1]).sum(-1), (pairs[0] <= pairs[1]).sum(-1)
    assert ((counts >= below) & (counts <= upto)).all()
    torch.testing.assert_close(losses, quantile_huber_loss_pairwise(theta, targets, quantile_midpoints(40)))
    assert torch.isfinite(grad).all()
