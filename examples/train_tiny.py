"""Train a tiny world model and a controller from Python, on real TakeCover frames: the whole pipeline in
a minute or two on a laptop CPU (tiny sizes: a smoke run, not a good agent).

    python examples/train_tiny.py [--root /tmp/wm-jax-tiny] [key=value ...]

Each stage is a plain function of ``wm_jax`` taking a resolved config; rerunning resumes (finished stages
return at once). The run folder is then ready for ``examples/dream_sweep.py``.
"""

import sys

import wm_jax

TINY = ["data.episodes=4", "data.long_hold_episodes=1", "data.sweep_episodes=1", "data.workers=2",
        "env.max_steps=60", "vae.z_dim=8", "vae.max_steps=3", "vae.batch_size=20", "vae.checkpoint_every=2",
        "vae.holdout_episodes=1", "mdnrnn.hidden=16", "mdnrnn.seq_len=20", "mdnrnn.batch_size=4", "mdnrnn.steps=3",
        "mdnrnn.checkpoint_every=2", "mdnrnn.holdout_episodes=1", "es.population=4", "es.trials=2",
        "es.generations=2", "es.dream_max_steps=30", "es.initial_states=4", "es.eval_every=1", "es.eval_trials=2",
        "es.scale_inputs=true", "eval.episodes=2", "eval.workers=1"]


def main(argv: list[str]) -> None:
    root = argv[argv.index("--root") + 1] if "--root" in argv else "/tmp/wm-jax-tiny"
    overrides = [a for a in argv if "=" in a]
    cfg = wm_jax.load_config("configs/quick.yaml", [f"root={root}", "name=tiny", *TINY, *overrides])
    print(wm_jax.collect(cfg).summary)  # real episodes -> <run>/data
    print("V:", wm_jax.train_vae(cfg, plots=False)["holdout_mse"])  # held-out per-pixel MSE
    wm_jax.encode(cfg)  # V's (mu, logvar) beside the data
    print("M:", wm_jax.train_mdnrnn(cfg, plots=False)["step"])
    c = wm_jax.train_controller(cfg, gif=False)  # CMA-ES in M's dream
    print("C dream return:", c["eval_return"][0])
    real = wm_jax.evaluate(cfg, episodes=2)  # the real game
    print(f"real return {real['mean']:.1f} ± {real['std']:.1f}; run folder: {cfg.run_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
