"""wm-jax: World Models (Ha & Schmidhuber, 2018) as a JAX-accelerated, end-to-end trainer."""

__version__ = "0.1.0"
