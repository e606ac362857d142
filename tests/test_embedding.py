"""The 3D embedding works for every registered network, built-in or from a plugin."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import dqnbench.plugin.hookspecs
from dqnbench.analysis import embedding as emb
from dqnbench.errors import DqnbenchError
from dqnbench.nn import UnsupportedObservations
from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import load_registry
from dqnbench.run.results import RunOutput, load_results, write_run
from tests.image_envs import FRAMES_ID, register_image_envs


class EncoderHead(nn.Module):
    """A third-party network with its own layer names (no ``body``), ending in a linear Q head."""

    def __init__(self, obs_dim: int, n_actions: int, width: int = 12) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(obs_dim, width), nn.Tanh())
        self.q_head = nn.Linear(width, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_head(self.encoder(obs))


class ThirdPartyPlugin:
    @dqnbench.plugin.hookspecs.hookimpl
    def dqnbench_networks(self):
        return {"encoder_head": EncoderHead}


class NoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2, 4))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.scale.T


@pytest.fixture(scope="module")
def plugin_registry():
    return load_registry(load_entrypoints=False, extra_plugins=(ThirdPartyPlugin(),))


def network_names():
    return load_registry(load_entrypoints=False, extra_plugins=(ThirdPartyPlugin(),)).names("network")


@pytest.fixture(scope="module")
def frames_id():
    register_image_envs()
    return FRAMES_ID


@pytest.mark.parametrize("name", network_names())
def test_every_registered_network_embeds(plugin_registry, name, frames_id):
    """On CartPole, or on tiny uint8 frames for the networks that take images only (the conv networks)."""
    torch.manual_seed(0)
    factory = plugin_registry.get("network", name).factory
    try:
        net, env_id, n_actions = factory(ObsSpec(4), 2), "CartPole-v1", 2
    except UnsupportedObservations:
        net, env_id, n_actions = factory(ObsSpec((2, 36, 36), "uint8"), 3), frames_id, 3
    embedding = emb.embed_states(net, env_id, episodes=2, seed=0)
    n = len(embedding.actions)
    assert n > 0 and embedding.features.shape[0] == n and embedding.q_values.shape == (n, n_actions)
    np.testing.assert_array_equal(embedding.actions, embedding.q_values.argmax(axis=1))
    assert len(embedding.returns) == 2 and embedding.episode.max() == 1
    frame = emb.embedding_frame(embedding)
    assert list(frame.columns[:3]) == ["pc1", "pc2", "pc3"] and len(frame) == n
    assert not net._forward_hooks and not net._forward_pre_hooks  # hooks are removed afterwards
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_builtin_networks_are_hooked_at_their_body(registry):
    net = registry.get("network", "mlp").factory(4, 2, hidden=[8, 6])
    obs = torch.randn(5, 4)
    with emb.FeatureExtractor(net, 2) as extract:
        feats, q = extract(obs)
    assert extract.layer == "body (output)"
    torch.testing.assert_close(feats, net.body(obs).detach())
    torch.testing.assert_close(q, net(obs).detach())


@pytest.mark.parametrize("name", ["minatar_cnn", "nature_cnn"])
@pytest.mark.parametrize("head", [{}, {"dueling": True}, {"noisy": True, "dueling": True}])
def test_conv_networks_are_hooked_at_their_penultimate_layer(registry, name, head):
    """The output of the hidden layer after the convolutions (``head.body``), one row of 512 or 128 per state."""
    net = registry.get("network", name).factory(ObsSpec((2, 36, 36), "uint8"), 3, **head).eval()
    obs = torch.randint(0, 256, (5, 2, 36, 36), dtype=torch.uint8)
    with emb.FeatureExtractor(net, 3) as extract:
        feats, q = extract(obs)
    assert extract.layer == "head.body (output)" and feats.shape == (5, 512 if name == "nature_cnn" else 128)
    expected = net.head.body(net.convs(obs.float() / 255).flatten(1))
    torch.testing.assert_close(feats, expected.detach())
    torch.testing.assert_close(q, net(obs).detach())


def test_a_conv_network_embeds_image_states_of_the_runs_env_component(frames_id):
    """Frames reach the network as uint8 ``(1, C, H, W)``, through the ``make_env`` given."""
    seen = []

    def make_env(env_id):
        seen.append(env_id)
        return gym.make(env_id)

    net = (
        load_registry(load_entrypoints=False)
        .get("network", "nature_cnn")
        .factory(ObsSpec((2, 36, 36), "uint8"), 3, hidden=[6])
    )
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append((args[0].dtype, tuple(args[0].shape))))
    embedding = emb.embed_states(net, frames_id, episodes=2, max_states=15, make_env=make_env)
    assert seen == [frames_id] and embedding.features.shape == (15, 6)
    assert set(calls) == {(torch.uint8, (1, 2, 36, 36))}
    assert emb.pca_3d(embedding.features)[1][0] > 0  # the states differ


def test_a_plugin_network_is_hooked_at_the_input_of_its_q_head(plugin_registry):
    net = plugin_registry.get("network", "encoder_head").factory(4, 3)
    obs = torch.randn(5, 4)
    with emb.FeatureExtractor(net, 3) as extract:
        feats, _ = extract(obs)
    assert extract.layer == "q_head (input)"
    torch.testing.assert_close(feats, net.encoder(obs).detach())


def test_an_explicit_layer_can_be_named(plugin_registry):
    net = plugin_registry.get("network", "encoder_head").factory(4, 2)
    obs = torch.randn(3, 4)
    with emb.FeatureExtractor(net, 2, layer="encoder.0") as extract:
        feats, _ = extract(obs)
    torch.testing.assert_close(feats, net.encoder[0](obs).detach())
    with pytest.raises(emb.EmbeddingError, match="no submodule 'nope'"):
        emb.FeatureExtractor(net, 2, layer="nope")


def test_a_network_without_a_linear_layer_gets_a_clear_error():
    with pytest.raises(DqnbenchError, match="NoLinear.*pass layer=NAME"):
        emb.embed_states(NoLinear(), "CartPole-v1", episodes=1)


def test_pca_orders_components_by_variance():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2)) * [5.0, 1.0]
    features = plane @ rng.normal(size=(2, 6))  # a 2D plane inside 6D
    coords, explained = emb.pca_3d(features)
    assert explained[0] > explained[1] > 0 and explained[2] == pytest.approx(0.0, abs=1e-9)
    assert explained.sum() == pytest.approx(1.0)
    assert np.var(coords[:, 0]) > np.var(coords[:, 1]) > np.var(coords[:, 2])
    narrow, ratio = emb.pca_3d(rng.normal(size=(10, 2)))  # fewer than 3 features: padded
    assert narrow.shape == (10, 3) and (narrow[:, 2] == 0).all() and ratio[2] == 0


def test_figure_and_rotating_gif(registry, tmp_path):
    net = registry.get("network", "mlp").factory(4, 2, hidden=[8])
    frame = emb.embedding_frame(emb.embed_states(net, "CartPole-v1", episodes=2))
    fig = emb.embedding_figure(frame, title="test")
    assert fig.axes[0].name == "3d"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["0: push left", "1: push right"]
    path = emb.embedding_gif(frame, tmp_path / "turn.gif", frames=3, dpi=40)
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.info["loop"] == 0
        first = np.asarray(gif.convert("RGB"), dtype=float)
        gif.seek(1)
        second = np.asarray(gif.convert("RGB"), dtype=float)
    assert first.std() > 10 and np.abs(first - second).mean() > 0.5  # not blank, and it turns


def dueling_record(cell: str, flat_config: dict, config: dict) -> dict:
    """The record of a finished run of a small dueling network on CartPole (seed 0), with extra config sections."""
    network = {"name": "dueling", "params": {"hidden": [8], "stream_hidden": 4}}
    return {
        "run_id": f"{cell}-s0",
        "cell": cell,
        "label": "default",
        "seed": 0,
        "status": "ok",
        "env": "CartPole-v1",
        "obs_dim": 4,
        "n_actions": 2,
        "flat_config": flat_config,
        "final_return": 1.0,
        "config": {"network": network, **config},
    }


def test_trained_network_round_trips_through_results(registry, tmp_path):
    net = registry.get("network", "dueling").factory(4, 2, hidden=[8], stream_hidden=4)
    record = dueling_record("r", {"network.name": "dueling"}, {})
    write_run(tmp_path, RunOutput(record, weights=net.state_dict()))
    loaded = emb.load_trained_network(load_results(tmp_path), "r-s0", registry)
    obs = torch.randn(4, 4)
    torch.testing.assert_close(loaded(obs), net(obs))
    assert not loaded.training


def test_representative_run_is_the_median_seed_of_the_best_cell():
    from tests.test_stats import make_runs

    runs = make_runs({
        "mlp lr=1": {"final": [10, 20, 30]},
        "mlp lr=2": {"final": [100, 300, 200, 250, 150]},
        "dueling": {"final": [5, 6, 7], "network": "dueling"},
    })  # fmt: skip
    chosen = dict(emb.representative_runs(runs))
    assert chosen == {"c1-s2": "network=mlp", "c2-s1": "network=dueling"}  # the best cell's median seed


def c51_record(atoms: int) -> dict:
    learner = {"name": "c51", "params": {"atoms": atoms, "v_min": -5.0, "v_max": 5.0, "double": False}}
    return dueling_record("c", {"network.name": "dueling", "learner.name": "c51"}, {"learner": learner})


def test_a_distributional_run_is_rebuilt_with_its_outputs_and_embedded_by_expected_q(registry, tmp_path):
    """A c51 run's network gives (B, 2, atoms); the embedding reads its expected Q-values through the learner."""
    net = registry.get("network", "dueling").factory(4, 2, hidden=[8], stream_hidden=4, outputs=7)
    write_run(tmp_path, RunOutput(c51_record(7), weights=net.state_dict()))
    results = load_results(tmp_path)
    loaded = emb.load_trained_network(results, "c-s0", registry)
    learner = emb.load_trained_learner(results, "c-s0", registry)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(loaded(obs), net.eval()(obs))
    assert loaded(obs).shape == (5, 2, 7) and learner.outputs == 7
    embedding = emb.embed_states(loaded, "CartPole-v1", episodes=1, max_states=50, q_values=learner.q_values)
    assert embedding.q_values.shape[1] == 2 and embedding.features.shape[1] == 8
    first = torch.as_tensor(np.zeros((1, 4), dtype=np.float32))
    with emb.FeatureExtractor(loaded, 2, q_values=learner.q_values) as extract:
        _, q = extract(first)
    torch.testing.assert_close(q, learner.q_values(loaded(first)))


def test_a_c51_grid_gets_its_embedding_plot(write_grid, tmp_path):
    import io
    import warnings

    import dqnbench
    from dqnbench.analysis.plots import write_plots

    grid = write_grid('[learner]\nname = "c51"\natoms = 11\n', steps=200)
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped embedding warns
        written = write_plots(res, tmp_path / "plots", gif=False, episodes=1)
    assert (tmp_path / "plots" / "embedding_0.png") in written
    assert "skipped" not in (tmp_path / "plots" / "index.md").read_text(encoding="utf-8")


def test_a_conv_run_is_rebuilt_for_its_recorded_observations_and_env(registry, tmp_path, frames_id):
    """The record's obs_shape/obs_dtype rebuild a conv network; its [env] section makes the env it saw."""
    net = registry.get("network", "minatar_cnn").factory(ObsSpec((2, 36, 36), "uint8"), 3, dueling=True)
    record = {
        **dueling_record("v", {"network.name": "minatar_cnn"}, {"env": {"name": "gymnasium", "params": {}}}),
        "env": frames_id,
        "obs_dim": 2 * 36 * 36,
        "obs_shape": [2, 36, 36],
        "obs_dtype": "uint8",
        "n_actions": 3,
    }
    record["config"]["network"] = {"name": "minatar_cnn", "params": {"dueling": True}}
    write_run(tmp_path, RunOutput(record, weights=net.state_dict()))
    results = load_results(tmp_path)
    loaded = emb.load_trained_network(results, "v-s0", registry)
    obs = torch.randint(0, 256, (4, 2, 36, 36), dtype=torch.uint8)
    torch.testing.assert_close(loaded(obs), net.eval()(obs))
    make_env = emb.load_trained_env(results, "v-s0", registry)
    embedding = emb.embed_states(loaded, frames_id, episodes=1, make_env=make_env)
    assert embedding.features.shape == (12, 128) and embedding.q_values.shape == (12, 3)
