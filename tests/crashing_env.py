"""An env factory for the worker-crash test: stepping forks a long-lived child, then the worker dies at once.

The child inherits the worker's end of its pipe, as a simulator's engine process would, so the host never sees EOF
on that pipe while the child lives: only a check of the worker process itself can tell that it is gone.
"""

import os
import time

from wm_jax.envs.vector import ToyEnv


class CrashingEnv(ToyEnv):
    def step(self, action):
        if os.fork() == 0:
            time.sleep(60)  # holds the pipe open, then leaves quietly
            os._exit(0)
        os._exit(7)


def make(env_cfg) -> CrashingEnv:
    return CrashingEnv(env_cfg)
