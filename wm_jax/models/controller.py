"""C: the controller, a (mostly) linear map from M's state to an action.

Parameters are a flat dict of arrays, which is also evosax's ``solution`` template::

    linear (hidden == 0):  {"w": [F, A_out], "b": [A_out]}        ("b" absent when bias=False)
    hidden layer:          {"w1": [F, Hc], "b1": [Hc], "w2": [Hc, A_out], "b2": [A_out]}

F depends on what C reads (cfg.controller.inputs): "z" → Z, "zh" → Z + H (paper CarRacing),
"zch" → Z + 2H (original Doom: z, LSTM cell, LSTM hidden). A_out = 3 for CarRacing, 1 for TakeCover.
CarRacing "zh", bias: (32 + 256)·3 + 3 = 867 parameters; Doom "zch", no bias: (64 + 512 + 512)·1 = 1,088.

The action mapping follows the original code:
CarRacing steer = tanh(o₀), gas = (tanh(o₁) + 1)/2, brake = clip(tanh(o₂), 0, 1);
TakeCover one output a = tanh(o) → left (−1) if a < −1/3, right (+1) if a > 1/3, else stay (0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wm_jax.envs.spec import env_spec, squash_action
from wm_jax.models.mdnrnn import LSTMState

INPUTS = ("z", "zh", "zch")


def feature_dim(inputs: str, z_dim: int, hidden: int) -> int:
    """Size F of the controller's input vector."""
    if inputs not in INPUTS:
        raise ValueError(f"controller inputs must be one of {INPUTS}, got {inputs!r}")
    return z_dim + {"z": 0, "zh": 1, "zch": 2}[inputs] * hidden


def output_dim(env_name: str) -> int:
    """Raw controller outputs A_out: one per action dimension (``wm_jax.envs.spec``)."""
    return env_spec(env_name).action_dim


def init_controller(key: jax.Array, feat_dim: int, out_dim: int, hidden: int = 0, bias: bool = True,
                    scale: float = 0.0) -> dict:
    """Controller parameters. scale = 0 gives all zeros (the ES's initial mean, as the original).

    A hidden layer uses Glorot-like random weights × `scale` when scale > 0 (zeros otherwise).
    """
    k1, k2 = jax.random.split(key)

    def w(k: jax.Array, shape: tuple[int, int]) -> jax.Array:
        if scale == 0.0:
            return jnp.zeros(shape, jnp.float32)
        return scale * jax.random.normal(k, shape, jnp.float32) / jnp.sqrt(shape[0])

    if hidden > 0:
        p = {"w1": w(k1, (feat_dim, hidden)), "w2": w(k2, (hidden, out_dim))}
        if bias:
            p["b1"] = jnp.zeros((hidden,), jnp.float32)
            p["b2"] = jnp.zeros((out_dim,), jnp.float32)
        return p
    p = {"w": w(k1, (feat_dim, out_dim))}
    if bias:
        p["b"] = jnp.zeros((out_dim,), jnp.float32)
    return p


def controller_from_config(key: jax.Array, ctrl_cfg, env_name: str, z_dim: int, lstm_hidden: int,
                           scale: float = 0.0) -> dict:
    """init_controller with sizes from cfg.controller, the env and M's sizes."""
    return init_controller(key, feature_dim(ctrl_cfg.inputs, z_dim, lstm_hidden), output_dim(env_name),
                           ctrl_cfg.hidden, ctrl_cfg.bias, scale)


def num_params(params: dict) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def features(z: jax.Array, lstm_state: LSTMState, inputs: str) -> jax.Array:
    """C's input: z [..., Z] and M's state (c, h: [..., H]) → [..., F]."""
    if inputs == "z":
        return z
    if inputs == "zh":
        return jnp.concatenate([z, lstm_state.h], axis=-1)
    if inputs == "zch":
        return jnp.concatenate([z, lstm_state.c, lstm_state.h], axis=-1)
    raise ValueError(f"controller inputs must be one of {INPUTS}, got {inputs!r}")


def act(params: dict, feats: jax.Array) -> jax.Array:
    """Raw (pre-squash) outputs: feats [..., F] → [..., A_out]."""
    if "w1" in params:
        x = jnp.tanh(feats @ params["w1"] + params.get("b1", 0.0))
        return x @ params["w2"] + params.get("b2", 0.0)
    return feats @ params["w"] + params.get("b", 0.0)


def policy(params: dict, z: jax.Array, lstm_state: LSTMState, inputs: str, env_name: str) -> jax.Array:
    """features → act → squash_action (wm_jax.envs.spec) in one call: the env action [..., A]."""
    return squash_action(act(params, features(z, lstm_state, inputs)), env_name)
