"""``python -m wm_jax.cli``: the same as the ``wm-jax`` command."""

import sys

from wm_jax.cli import main

sys.exit(main())
