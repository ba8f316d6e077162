"""The one sample of V's posterior every stage shares (VAE training, M's inputs, the dream's start, the agent)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reparameterize(mu: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = μ + exp(logvar / 2)·ε (Kingma & Welling's reparameterisation); mu, logvar, eps: [..., Z] -> [..., Z].

    `eps` ~ N(0, I) is passed in, so callers choose its key (or share it across candidates)."""
    return mu + jnp.exp(0.5 * logvar) * eps
