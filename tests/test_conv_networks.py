"""The conv Q-networks ``nature_cnn`` and ``minatar_cnn``, and the stacked convolution they are built from."""

from __future__ import annotations

import io
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import dqnbench
from dqnbench.agent.nets import VmapStack, network_problem, probe_observations, stack_modules
from dqnbench.builtin.conv import minatar_cnn, nature_cnn, smallest_image
from dqnbench.builtin.dueling import DuelingNetwork
from dqnbench.builtin.networks import MLP, mlp
from dqnbench.builtin.noisy import NoisyLinear, NoisyNetwork
from dqnbench.nn import Conv2d, UnsupportedObservations, conv2d
from dqnbench.plugin.checks import check_network_outputs
from dqnbench.plugin.obs import ObsSpec
from tests.extras import require
from tests.image_envs import GRID_ID, register_image_envs

MINATAR = ObsSpec((4, 10, 10), "bool")
ATARI = ObsSpec((4, 84, 84), "uint8", frames=4)
SMALL_FRAMES = ObsSpec((2, 36, 36), "uint8")  # the smallest images nature_cnn takes: cheap to test
HEADS = {
    "plain": {},
    "dueling": {"dueling": True},
    "noisy": {"noisy": True},
    "noisy_dueling": {"noisy": True, "dueling": True},
}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------- the stacked convolution


def _members(k: int = 3) -> list[Conv2d]:
    return [Conv2d(4, 6, 3, stride=2, padding=1) for _ in range(k)]


def test_conv2d_of_stacked_members_equals_each_members_convolution() -> None:
    convs = _members()
    weight = torch.stack([c.weight for c in convs]).detach().requires_grad_()
    bias = torch.stack([c.bias for c in convs]).detach().requires_grad_()
    x = torch.randn(3, 5, 4, 9, 9, requires_grad=True)
    together = conv2d(x, weight, bias, stride=2, padding=1)
    alone = torch.stack([c(x[k]) for k, c in enumerate(convs)])
    assert together.shape == (3, 5, 6, 5, 5)
    torch.testing.assert_close(together, alone)
    upstream = torch.randn_like(together)
    grads = torch.autograd.grad(together, (weight, bias, x), upstream)
    member_grads = [torch.autograd.grad(c(x[k]), (c.weight, c.bias), upstream[k]) for k, c in enumerate(convs)]
    torch.testing.assert_close(grads[0], torch.stack([g[0] for g in member_grads]))
    torch.testing.assert_close(grads[1], torch.stack([g[1] for g in member_grads]))
    x_grad = torch.autograd.grad(alone, x, upstream)[0]
    torch.testing.assert_close(grads[2], x_grad)


def test_stacked_layers_chain_and_a_single_conv_takes_any_leading_dims() -> None:
    first, second = _members(2), [Conv2d(6, 2, 2) for _ in range(2)]
    x = torch.randn(2, 3, 4, 8, 8)
    hidden = conv2d(x, torch.stack([c.weight for c in first]), torch.stack([c.bias for c in first]), 2, 1)
    out = conv2d(torch.relu(hidden), torch.stack([c.weight for c in second]), None, 1)
    expected = torch.stack(
        [second[k]._conv_forward(torch.relu(first[k](x[k])), second[k].weight, None) for k in (0, 1)]
    )
    torch.testing.assert_close(out, expected)
    single = first[0]
    torch.testing.assert_close(single(x), torch.stack([single(x[0]), single(x[1])]))  # (2, 3, C, H, W) as 6 images
    with pytest.raises(ValueError, match="need input"):
        conv2d(torch.randn(5, 4, 8, 8), torch.stack([c.weight for c in first]), None)


def test_conv2d_module_is_torch_conv2d_with_the_same_init_and_state_dict() -> None:
    torch.manual_seed(1)
    ours = Conv2d(3, 8, 5, stride=2)
    torch.manual_seed(1)
    theirs = nn.Conv2d(3, 8, 5, stride=2)
    assert isinstance(ours, nn.Conv2d) and ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, theirs.state_dict()[key], rtol=0, atol=0)
    x = torch.randn(2, 3, 12, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match="groups=1"):
        Conv2d(4, 4, 3, groups=2)


# --------------------------------------------------------------------------- the architectures


def test_nature_cnn_is_the_nature_dqn_architecture() -> None:
    net = nature_cnn(ATARI, 6)
    convs = [m for m in net.convs if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, 32, (8, 8), (4, 4)),
        (32, 64, (4, 4), (2, 2)),
        (64, 64, (3, 3), (1, 1)),
    ]
    assert isinstance(net.head, MLP) and [m.weight.shape for m in net.head.linears] == [(512, 3136), (6, 512)]
    assert smallest_image(((32, 8, 4), (64, 4, 2), (64, 3, 1))) == 36


def test_minatar_cnn_is_young_and_tians_architecture() -> None:
    net = minatar_cnn(MINATAR, 3)
    (conv,) = [m for m in net.convs if isinstance(m, nn.Conv2d)]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (4, 16, (3, 3), (1, 1))
    assert [m.weight.shape for m in net.head.linears] == [(128, 16 * 8 * 8), (3, 128)]


@pytest.mark.parametrize("factory, obs", [(minatar_cnn, MINATAR), (nature_cnn, SMALL_FRAMES)])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("outputs", [1, 5])
def test_every_head_gives_q_values_or_outputs_per_action(factory, obs, head, outputs) -> None:
    net = factory(obs, 3, outputs=outputs, **HEADS[head])
    expected = (7, 3) if outputs == 1 else (7, 3, outputs)
    for mode in ("train", "eval"):
        q = getattr(net, mode)()(probe_observations(obs, (7,)))
        assert q.shape == expected and q.dtype == torch.float32
    check_network_outputs(net, probe_observations(obs, (2,)), 3, outputs)  # the loop's contract probe
    kind = {"plain": MLP, "dueling": DuelingNetwork, "noisy": NoisyNetwork, "noisy_dueling": NoisyNetwork}[head]
    assert isinstance(net.head, kind)


@pytest.mark.parametrize("outputs", [1, 4])
@pytest.mark.parametrize("head", ["dueling", "noisy_dueling"])
def test_dueling_heads_average_to_the_state_value(head, outputs) -> None:
    """Wang et al. (2016), eq. 9: the mean over actions of Q is V."""
    net = minatar_cnn(MINATAR, 5, outputs=outputs, **HEADS[head]).eval()
    obs = probe_observations(MINATAR, (6,))
    features = net.head.body(net.convs(obs.float()).flatten(1))
    value = net.head.value(features)
    action_dim = -1 if outputs == 1 else -2
    mean_q = net(obs).mean(dim=action_dim)
    torch.testing.assert_close(mean_q, value.squeeze(-1) if outputs == 1 else value)


def test_noisy_heads_are_noisy_after_the_convolutions_only() -> None:
    net = nature_cnn(SMALL_FRAMES, 3, noisy=True, sigma0=0.3)
    noisy = [m for m in net.modules() if isinstance(m, NoisyLinear)]
    assert len(noisy) == 2 and not any(isinstance(m, NoisyLinear) for m in net.convs.modules())
    torch.testing.assert_close(noisy[0].weight_sigma, torch.full_like(noisy[0].weight_sigma, 0.3 / 8.0))  # σ₀/√(64·1·1)
    obs = probe_observations(SMALL_FRAMES, (4,))
    assert not torch.equal(net.train()(obs), net(obs))  # fresh noise at each training forward
    torch.testing.assert_close(net.eval()(obs), net(obs), rtol=0, atol=0)  # mean weights when evaluating


def test_observations_are_scaled_from_their_dtype() -> None:
    """uint8 pixels by 1/255 (Mnih et al. 2015), bools as 0/1, float32 as is; (H, W) images are one channel."""
    frames = nature_cnn(SMALL_FRAMES, 3)
    pixels = probe_observations(SMALL_FRAMES, (3,))
    torch.testing.assert_close(frames(pixels), frames(pixels.float() / 255.0))
    grid = minatar_cnn(MINATAR, 3)
    cells = probe_observations(MINATAR, (3,))
    torch.testing.assert_close(grid(cells), grid(cells.float()))
    flat_image = minatar_cnn(ObsSpec((10, 10), "float32"), 3)
    image = torch.randn(3, 10, 10)
    assert flat_image(image).shape == (3, 3)
    torch.testing.assert_close(flat_image(image), flat_image.head(flat_image.convs(image[:, None]).flatten(1)))


def test_weights_round_trip_through_state_dict() -> None:
    net, copy = minatar_cnn(MINATAR, 3, dueling=True), minatar_cnn(MINATAR, 3, dueling=True)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    obs = probe_observations(MINATAR, (4,))
    torch.testing.assert_close(copy(obs), net(obs), rtol=0, atol=0)
    assert {"convs.0.weight", "head.body.0.weight", "head.value.0.weight"} <= set(net.state_dict())


# --------------------------------------------------------------------------- what the networks refuse


@pytest.mark.parametrize("factory", [nature_cnn, minatar_cnn])
def test_conv_networks_refuse_vector_observations_naming_the_flat_ones(factory) -> None:
    with pytest.raises(UnsupportedObservations, match="needs image observations.*mlp, dueling or noisy"):
        factory(ObsSpec(4), 2)
    with pytest.raises(UnsupportedObservations):
        factory(4, 2)  # a v1 caller's plain int is a vector


def test_nature_cnn_refuses_images_smaller_than_its_kernels() -> None:
    with pytest.raises(UnsupportedObservations, match="at least 36×36, got 10×10.*minatar_cnn"):
        nature_cnn(MINATAR, 3)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dueling": 1}, "dueling must be true or false"),
        ({"noisy": "yes"}, "noisy must be true or false"),
        ({"hidden": 512}, "hidden must be a list"),
        ({"hidden": [0]}, "hidden must be a list of positive integers"),
        ({"noisy": True, "sigma0": -1.0}, "sigma0 must be"),
    ],
)
def test_bad_params_are_value_errors_naming_the_param(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        minatar_cnn(MINATAR, 3, **params)


def test_mlp_refuses_atari_frames_naming_the_conv_networks_and_takes_minatar() -> None:
    with pytest.raises(UnsupportedObservations, match=r"28,224 inputs.*nature_cnn or minatar_cnn"):
        mlp(ATARI, 6)
    assert mlp(MINATAR, 3)(probe_observations(MINATAR, (2,))).shape == (2, 3)
    assert mlp(ObsSpec(10_000), 2).body.linears[0].in_features == 10_000  # long vectors are not images


# --------------------------------------------------------------------------- lock-step stacking


@pytest.mark.parametrize("factory, obs", [(minatar_cnn, MINATAR), (nature_cnn, SMALL_FRAMES)])
@pytest.mark.parametrize("head", HEADS)
def test_conv_networks_stack_natively_with_each_members_outputs_and_gradients(factory, obs, head) -> None:
    nets = [factory(obs, 3, outputs=2, **HEADS[head]).eval() for _ in range(3)]  # eval: noise off
    stacked = stack_modules(nets, obs).eval()
    assert not isinstance(stacked, VmapStack)  # one grouped convolution, batched matmuls: no vmap
    x = probe_observations(obs, (3, 4))
    together = stacked(x)
    alone = torch.stack([net(x[k]) for k, net in enumerate(nets)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    upstream = torch.randn_like(together)
    together.backward(upstream)
    for k, net in enumerate(nets):
        net(x[k]).backward(upstream[k])
    for name, param in stacked.named_parameters():
        member_grads = [net.get_parameter(name).grad for net in nets]
        if param.grad is None:  # the noise scales σ of noisy layers in eval mode
            assert all(g is None for g in member_grads), name
            continue
        torch.testing.assert_close(param.grad, torch.stack(member_grads), rtol=1e-4, atol=1e-5, msg=name)


def test_the_lockstep_probe_finds_conv_networks_native() -> None:
    assert network_problem(minatar_cnn, MINATAR, 3) == (None, True)
    assert network_problem(lambda o, a: nature_cnn(o, a, noisy=True), SMALL_FRAMES, 3) == (None, True)


# --------------------------------------------------------------------------- end to end


CONV_GRID = """
[experiment]
name = "conv"
env = "{env}"
total_steps = 160
seeds = 2
eval_every = 80
eval_episodes = 2

[agent]
learning_starts = 50
batch_size = 8
target_update = 40

[network]
name = "minatar_cnn"
hidden = [16]

[grid]
"network.dueling" = [false, true]
"""


def test_a_minatar_like_grid_trains_conv_networks_alone_and_in_lockstep(tmp_path) -> None:
    """Boolean (4, 10, 10) observations through the whole loop: single runs and native lock-step members."""
    register_image_envs()
    grid = tmp_path / "conv.toml"
    grid.write_text(CONV_GRID.format(env=GRID_ID), encoding="utf-8")

    def run(out, lockstep):
        return dqnbench.run_grid(
            grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), lockstep=lockstep, plots=False
        )

    lock, solo = run(tmp_path / "lock", True), run(tmp_path / "solo", False)
    assert set(lock.runs.status) == {"ok"} and set(solo.runs.status) == {"ok"} and len(lock.runs) == 4
    assert all(lock.record(r)["lockstep"]["members"] == 2 for r in lock.runs.run_id)
    for run_id in solo.runs.run_id:
        assert lock.weights(run_id).keys() == solo.weights(run_id).keys()
        assert "convs.0.weight" in solo.weights(run_id)
        assert solo.record(run_id)["obs_shape"] == [4, 10, 10] and solo.record(run_id)["obs_dtype"] == "bool"


# --------------------------------------------------------------------------- user errors through the CLI


def dqnbench_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "dqnbench", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "env, network, message",
    [
        ("CartPole-v1", "nature_cnn", 'network.name: network "nature_cnn"'),
        ("ALE/Pong-v5", "mlp", "choose the nature_cnn or minatar_cnn network"),
    ],
)
def test_a_network_that_cannot_take_the_observations_exits_2_before_any_run(tmp_path, env, network, message) -> None:
    if env.startswith("ALE/"):
        require("ale_py")
    grid = tmp_path / "bad.toml"
    grid.write_text(f'[experiment]\nname = "bad"\nenv = "{env}"\n[network]\nname = "{network}"\n')
    proc = dqnbench_cli("run", "--grid", grid, "--out", tmp_path / "out", "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("A.L.E", "["))]
    assert "Traceback" not in proc.stderr and len(lines) == 1 and "network.name" in lines[0], proc.stderr
    assert message in lines[0], proc.stderr


class V1Replay:
    """DESIGN.md's v1 replay: flat float32 rows of ``obs_dim`` values."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float) -> None:
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        self.obs[0] = obs


def v1_network(obs_dim: int, n_actions: int) -> nn.Module:
    return nn.Sequential(nn.Linear(obs_dim, 8), nn.ReLU(), nn.Linear(8, n_actions))


@pytest.mark.parametrize(
    "section, key",
    [
        ('[network]\nname = "v1_net"\n', "network.name"),
        ('[network]\nname = "minatar_cnn"\n[replay]\nname = "v1_replay"\n', "replay.name"),
    ],
)
def test_v1_components_on_image_observations_exit_2_before_anything_runs(write_grid, section, key) -> None:
    """v1 plugins are promised on vector observations only: on bool images a v1 network fails at its first
    forward and a v1 replay at its first add, in every run of the cell. The plan refuses that pairing instead."""
    from dqnbench.errors import GridError
    from dqnbench.run.runner import prepare

    register_image_envs()
    plugin = types.SimpleNamespace(
        __name__="v1_components",
        dqnbench_networks=dqnbench.hookimpl(lambda: {"v1_net": v1_network}),
        dqnbench_replays=dqnbench.hookimpl(lambda: {"v1_replay": V1Replay}),
    )
    grid = write_grid(section)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "").replace("CartPole-v1", GRID_ID))
    with pytest.raises(GridError) as err:
        prepare(grid, [plugin], load_entrypoints=False)
    message = str(err.value)
    assert f"{key}: " in message and f"cannot take {GRID_ID}'s observations (4, 10, 10) bool" in message
    grid.write_text(grid.read_text().replace(GRID_ID, "CartPole-v1").replace('"minatar_cnn"', '"mlp"'))
    prepare(grid, [plugin], load_entrypoints=False)  # on float vectors both are fine
