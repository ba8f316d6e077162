"""What C reads, measured on the recorded episodes: the RMS of each of its inputs (z from V's posterior, M's c and
h teacher-forced on the recorded actions), by which ``es.scale_inputs`` scales the ES's search space."""

from __future__ import annotations

import functools

import numpy as np

from wm_jax.config import Config


def input_rms(cfg: Config, mdn: dict, episodes: int = 64, seed: int = 0) -> np.ndarray:
    """RMS [F] of C's inputs (cfg.controller.inputs) over `episodes` recorded episodes spread over the data set:
    z drawn from V's posterior (as C reads it in the real env), M's c and h teacher-forced on the recorded actions.
    Inputs far quieter than the rest are floored at a tenth of the median RMS (see es.scale_inputs)."""
    import jax
    import jax.numpy as jnp

    from wm_jax.data.dataset import open_dataset
    from wm_jax.data.sequences import episode_windows

    data = open_dataset(cfg.data_dir, skip_corrupt=cfg.data.skip_corrupt)
    n = min(episodes, len(data))
    if n == 0:
        raise FileNotFoundError(f"no episodes in {cfg.data_dir} to measure C's inputs on (es.scale_inputs)")
    w = episode_windows(data, sorted(set(np.linspace(0, len(data) - 1, n).round().astype(int).tolist())))
    rms = np.asarray(_input_rms(cfg.controller.inputs, cfg.mdnrnn.restart_flag)(
        mdn, *(jnp.asarray(w[k]) for k in ("mu", "logvar", "actions", "mask")), jax.random.PRNGKey(seed)))
    if not np.all(np.isfinite(rms)):
        raise ValueError(f"non-finite RMS of C's inputs on {cfg.data_dir} (M or the latents hold NaN/inf)")
    return np.maximum(rms, 0.1 * np.median(rms)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _input_rms(inputs: str, restart_flag: bool):
    """jit(M, mu, logvar, actions, mask, key) -> RMS [F] of C's inputs; one compiled function per input kind."""
    import jax
    import jax.numpy as jnp

    from wm_jax.models import controller as ctrl
    from wm_jax.models import mdnrnn as M

    def run(mdn, mu, logvar, actions, mask, key):
        z = M.sample_latents(key, mu, logvar)  # [N, T+1, Z]
        restart = jnp.zeros(actions.shape[:2], z.dtype).at[:, 0].set(1.0)
        x = jnp.swapaxes(M.model_inputs(z, actions, restart, restart_flag), 0, 1)  # [T, N, I]
        zt, m = jnp.swapaxes(z[:, :-1], 0, 1), jnp.swapaxes(mask, 0, 1)

        def step(carry, inp):
            state, sq = carry
            x_t, z_t, m_t = inp
            f = ctrl.features(z_t, state, inputs)  # what C reads at step t: z_t and M's state before x_t
            return (M.lstm_step(mdn, state, x_t), sq + (m_t[:, None] * f**2).sum(0)), None

        state = M.zero_state(mdn["lstm"]["w_h"].shape[0], (mu.shape[0],))
        f_dim = ctrl.feature_dim(inputs, mu.shape[-1], state.h.shape[-1])
        (_, sq), _ = jax.lax.scan(step, (state, jnp.zeros((f_dim,), z.dtype)), (x, zt, m))
        return jnp.sqrt(sq / jnp.maximum(m.sum(), 1.0))

    return jax.jit(run)
