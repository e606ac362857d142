import pytest
import torch

from dqnbench.agent.losses import dqn_targets, td_loss


def test_target_bootstraps_max_of_target_net_and_masks_terminal():
    rewards = torch.tensor([1.0, 2.0])
    discounts = torch.tensor([0.9, 0.5])
    terminated = torch.tensor([False, True])
    next_q = torch.tensor([[1.0, 3.0], [10.0, 20.0]])
    targets = dqn_targets(rewards, discounts, terminated, next_q)
    assert targets.shape == (2,)
    torch.testing.assert_close(targets, torch.tensor([1.0 + 0.9 * 3.0, 2.0]))


def test_double_dqn_evaluates_online_argmax_with_target_net():
    next_target = torch.tensor([[5.0, 1.0]])
    next_online = torch.tensor([[0.0, 9.0]])  # online picks action 1, target values it at 1.0
    targets = dqn_targets(torch.zeros(1), torch.ones(1), torch.zeros(1, dtype=torch.bool), next_target, next_online)
    torch.testing.assert_close(targets, torch.tensor([1.0]))


def test_tutorial_broadcasting_bug_is_caught():
    """The tutorial's b_r has shape (B, 1): (B,1) + (B,) would broadcast to (B, B)."""
    rewards_column = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"rewards must have shape \(4,\)"):
        dqn_targets(rewards_column, torch.full((4,), 0.9), torch.zeros(4), torch.zeros(4, 2))
    q_eval_column = torch.zeros(4, 1)  # the tutorial's gather(1, b_a) without squeeze
    with pytest.raises(ValueError, match="q_taken"):
        td_loss(q_eval_column, torch.zeros(4), torch.ones(4))


def test_mse_loss_is_weighted_mean_and_reports_td_errors():
    q = torch.tensor([1.0, 2.0, 3.0])
    targets = torch.tensor([2.0, 2.0, 0.0])
    loss, td = td_loss(q, targets, torch.ones(3), "mse")
    torch.testing.assert_close(loss, torch.tensor((1.0 + 0.0 + 9.0) / 3))
    torch.testing.assert_close(td, torch.tensor([1.0, 0.0, -3.0]))
    weighted, _ = td_loss(q, targets, torch.tensor([0.0, 1.0, 0.5]), "mse")
    torch.testing.assert_close(weighted, torch.tensor(0.5 * 9.0 / 3))


def test_huber_loss_is_quadratic_near_zero_and_linear_far():
    q = torch.tensor([0.0, 0.0])
    targets = torch.tensor([0.5, 3.0])
    loss, _ = td_loss(q, targets, torch.ones(2), "huber")
    torch.testing.assert_close(loss, torch.tensor((0.5 * 0.25 + (3.0 - 0.5)) / 2))


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown loss"):
        td_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), "l1")


def test_member_losses_are_each_members_own_mean_and_shapes_are_checked():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    losses, _ = td_loss(q, targets, torch.ones(2, 2), "mse")
    torch.testing.assert_close(losses, torch.tensor([2.5, 2.0]))  # (1 + 4) / 2, (0 + 4) / 2
    (grads,) = torch.autograd.grad(losses.sum(), q)
    torch.testing.assert_close(grads, torch.tensor([[1.0, 2.0], [0.0, 2.0]]))  # 2 (q − t) / B
    with pytest.raises(ValueError, match=r"targets|q_taken|weights"):
        td_loss(q, targets.reshape(-1), torch.ones(4), "mse")
