"""Configuration: frozen dataclasses, YAML files, dotted command-line overrides.

A config is built in three layers, each validated before any work starts:

1. the dataclass defaults below (each field says what it is and where its default comes from),
2. a YAML file (``configs/*.yaml``) that may ``extends:`` another YAML file in the same folder,
3. dotted overrides from the command line: ``data.episodes=200 vae.batch_size=50``.

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key; ranges and rules across
sections are checked by :func:`wm_jax.config_checks.validate`. The generic machinery (typed building, YAML, overrides)
is wm_jax.config_build; showing a config as commented YAML and comparing two is wm_jax.config_show.
Derived values (``run_dir``, ``action_dim``, ...) are properties, computed in one place and never stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from wm_jax.config_build import build, merge, nest, parse_override, read_yaml
from wm_jax.config_checks import ConfigError, validate


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "takecover"  # "carracing" (gymnasium CarRacing-v3), "takecover" (VizDoom) or "atari" (ALE).
    frame_size: int = 64  # Frames are area-resized to frame_size x frame_size x 3 (paper: 64).
    max_steps: int = 2100  # Episode cap; TakeCover has no timeout of its own (paper: 2100).
    carracing_policy: str = "brownian"  # Collection policy for CarRacing: "brownian" or "random_linear".
    doom_repeat_min: int = 1  # TakeCover random policy holds an action for 1..10 frames (original code).
    doom_repeat_max: int = 10
    doom_long_repeat_min: int = 20  # ... and for `data.long_hold_episodes`: actions held 20..150 frames, long
    doom_long_repeat_max: int = 150  # enough to cross the room and stay pinned at a wall (deaths there).
    doom_sweep_min: int = 60  # `data.sweep_episodes`: legs of 60..130 frames, direction alternating, ...
    doom_sweep_max: int = 130
    doom_sweep_random_leg: float = 0.0  # ... a leg holds a random action instead with this probability (0.1
    # halves the mean length, 774 -> 538 steps on 60 seeds: stopping is what gets the player hit).
    carracing_excursion: float = 0.01  # `data.follow_episodes`: per-step chance of a Brownian excursion ...
    carracing_excursion_min: int = 10  # ... lasting 10..60 steps (the car skids off and the follower recovers).
    carracing_excursion_max: int = 60
    doom_screen_flashes: bool = False  # Render the red flash of a hit (take_cover.cfg: off; see envs/takecover.py).
    doom_skill: int = 0  # ViZDoom's set_doom_skill 1..5; 0 keeps take_cover.cfg's 4. 1-4 play the same game (the
    # monsters are scripted); 5 is Nightmare (fast monsters): random play lives 71 steps there, 227 at 1-4 (paper: 210).
    carracing_fast_render: bool = True  # Same pixels as gymnasium's renderer, ~2x faster (wm_jax/envs/carracing.py).
    # Atari (env.name=atari; the 100k protocol of IRIS/DIAMOND, wm_jax/envs/atari.py):
    atari_game: str = "pong"  # pong, freeway, boxing or breakout (wm_jax.envs.spec.ATARI_GAMES).
    atari_frameskip: int = 4  # Emulator frames per agent step (the observation: max of the last two).
    atari_noop_max: int = 30  # Reset plays 1..noop_max NOOP frames (drawn from the episode's seed); 0 = none.
    atari_sticky: float = 0.0  # ALE repeat_action_probability (0 as NoFrameskip-v4 in IRIS/DIAMOND; v5's own: 0.25).
    # Breakout stands still until FIRE: pressed for the agent at reset and after each lost life (FireResetEnv).
    atari_fire_reset: bool = True
    # Random collection holds each uniform action for 1..atari_repeat_max steps (1: a new one every step, as SimPLe).
    # Freeway pays only after ~100 steps of UP: with 1, random play never crosses the road (envs/atari.UniformPolicy).
    atari_repeat_max: int = 1

    @property
    def id(self) -> str:
        """The environment's id in wm_jax.envs.spec: the name, or ``atari/<game>``."""
        from wm_jax.envs.spec import env_id

        return env_id(self.name, self.atari_game)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    episodes: int = 200  # Random-policy episodes to collect (original: 10,000).
    # TakeCover only: extra episodes (indices episodes .. episodes + long_hold_episodes - 1) whose random actions
    # are held env.doom_long_repeat_min..max frames. The original 1-10 frame random walk keeps the player near
    # the middle, so M never sees it die at a wall and the dream rewards running into one ("always right").
    long_hold_episodes: int = 0
    # TakeCover only (beyond the paper): then episodes of a scripted sweeping policy (envs.takecover.SweepPolicy)
    # that survives ~750 steps: random play dies within ~300, so M never sees the crowded, deadlier late game.
    sweep_episodes: int = 0
    # CarRacing only (beyond the paper): then episodes of a scripted road follower with random excursions
    # (envs.carracing.FollowPolicy): Brownian driving leaves the road within seconds, so M never sees driving.
    follow_episodes: int = 0
    workers: int = 0  # Collection worker processes; 0 = one per CPU core.
    seed: int = 0  # Base seed; episode i uses seed + i, so reruns reproduce and top up.
    skip_corrupt: bool = False  # Skip unreadable shards (with a warning) instead of raising.
    min_length: int = 1  # Episodes shorter than this many steps are discarded at collection.
    compress_level: int = 1  # Deflate level of episode shards (1: fastest; np.savez_compressed uses 6).
    # Real agent steps a run may spend (Atari 100k: 100,000): random collection, every iterate round's agent
    # episodes; 0 = no limit. Checked when the config loads (worst case: every collected episode at its cap) and
    # again before each collection starts (the steps on disk + the round's worst case); evaluation is not counted.
    interaction_budget: int = 0
    episode_steps: int = 0  # Cap of a collected episode (random and agent rounds); 0 = env.max_steps.

    @property
    def collected(self) -> int:
        """Episodes ``wm-jax collect`` gathers: plain random, then long-hold, then sweep (by index)."""
        return self.episodes + self.long_hold_episodes + self.sweep_episodes + self.follow_episodes

    def policy_kind(self, index: int) -> str:
        """Which collection policy plays episode `index` (< collected): 'random', 'long_hold', 'sweep' or
        'follow' (by index, in that order)."""
        for kind, end in (("random", self.episodes), ("long_hold", self.episodes + self.long_hold_episodes),
                          ("sweep", self.episodes + self.long_hold_episodes + self.sweep_episodes)):
            if index < end:
                return kind
        return "follow"


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 32  # Latent size (paper: 32 CarRacing, 64 Doom).
    kl_tolerance: float = 0.5  # Free-bits floor: KL is max(KL, kl_tolerance * z_dim) (original).
    learning_rate: float = 1e-4  # Adam (original).
    batch_size: int = 100  # Original.
    epochs: float = 1.0  # Passes over the collected frames (fractions allowed).
    max_steps: int = 0  # If > 0, stop after this many steps whatever `epochs` says.
    checkpoint_every: int = 500  # Steps between orbax checkpoints.
    log_every: int = 50  # Steps between metric records.
    holdout_episodes: int = 2  # Last episodes kept out of training, for reconstruction MSE.
    encode_batch_size: int = 1000  # Frames per jitted call in `wm-jax encode`.
    # TakeCover only: fireball pixels (of the frame or the reconstruction) weigh 1 + this in the squared error;
    # 0 = the original's loss. Tells V what the dream must show (beyond the paper; README, "fireball_weight").
    fireball_weight: float = 0.0
    # Atari only: pixels off the static playfield (in the frame or the reconstruction; the playfield is the median
    # of a sample of V's training frames, saved as <run>/vae/background.png) weigh 1 + this in the squared error;
    # 0 = the original's loss. Keeps small objects such as Pong's ball in z (beyond the paper; docs/findings.md).
    foreground_weight: float = 0.0
    # Atari only, with foreground_weight: foreground pixels in small isolated blobs (at most 6 foreground pixels in
    # their 5x5 neighbourhood: Breakout's and Pong's ball) weigh this much more again. A 1-3 pixel ball is ~1% of
    # the foreground the foreground weight spreads over (Breakout: the broken bricks, the paddle, the score).
    small_object_weight: float = 0.0
    # Initial bias of the encoder's log-variance head: the posterior noise V starts with is exp(logvar_init / 2);
    # 0 = flax's zero bias (the original: sigma 1). Where frames differ in a few pixels (Atari), mu varies ~0.004
    # across frames at initialisation, ~250x below sigma 1, and the decoder learns to ignore z (docs/findings.md).
    logvar_init: float = 0.0
    # Atari only: a residual V. The encoder sees (frame - playfield) * 50, the decoder outputs sigmoid(logits +
    # logit(playfield)); the playfield (<run>/vae/background.png) travels in V's params as params["playfield"] and is
    # never trained. False = the original V (beyond the paper; models/vae.py, docs/findings.md "A residual V").
    residual: bool = False
    plan: str = "auto"  # Conv implementation: auto (by backend), cpu, xla, or 8 entries (models/conv.resolve_plan).


@dataclasses.dataclass(frozen=True)
class MDNRNNConfig:
    hidden: int = 256  # LSTM units (paper: 256 CarRacing, 512 Doom).
    mixtures: int = 5  # Gaussians per z dimension (paper: 5).
    seq_len: int = 999  # Training window length (original CarRacing: 999).
    batch_size: int = 100  # Original.
    learning_rate: float = 1e-3  # Adam (original).
    grad_clip: float = 1.0  # Global-norm gradient clipping (original).
    steps: int = 4000  # Training steps.
    done_pos_weight: float = 10.0  # Weight of the positive (episode end) class in the done BCE (original Doom).
    reward_weight: float = 1.0  # Weight of the reward MSE in the loss.
    reward_sign: bool = False  # Learn sign(reward) (Atari: the clipped reward of DQN and SimPLe); false: the reward.
    done_weight: float = 1.0  # Weight of the done BCE in the loss.
    # The done target of step t is 1 when the episode ends by death within the next `done_horizon` steps (the
    # last `done_horizon` steps of a terminated episode); 1 = the original's (the death step only). The dream
    # then ends a step with the calibrated probability / done_horizon (beyond the paper; README, "done_horizon").
    done_horizon: int = 1
    # Dropout on the head's input h (p), one mask per training window; the dream draws one mask per episode, so
    # every dream episode runs in a slightly different world and C cannot exploit one model's quirks (after
    # Wellmer & Kwok 2021, "Dropout's Dream Land"; beyond the paper). C reads h itself, which stays unmasked.
    head_dropout: float = 0.0
    restart_flag: bool = False  # Feed a restart flag as an extra input (original Doom model).
    checkpoint_every: int = 500
    log_every: int = 50
    holdout_episodes: int = 2  # Last episodes kept out of training, for held-out NLL.
    scan_unroll: int = 1  # lax.scan unroll factor of the LSTM (speed only; 1 was fastest in `wm-jax bench mdnrnn`).


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    inputs: str = "zh"  # What C reads: "z", "zh" (paper CarRacing) or "zch" (paper Doom: z, cell, hidden).
    hidden: int = 0  # Hidden tanh layer size; 0 = linear (paper's "z with a hidden layer" row: 40).
    bias: bool = True  # Original Doom controller has no bias.


@dataclasses.dataclass(frozen=True)
class ESConfig:
    mode: str = "dream"  # Where C is trained: "dream" (M as the env) or "real".
    strategy: str = "CMA_ES"  # Any evosax algorithm by class name.
    population: int = 64  # Candidates per generation (paper: 64).
    trials: int = 16  # Rollouts per candidate, averaged (paper: 16).
    generations: int = 200  # Paper Doom: ~200 generations.
    sigma_init: float = 0.1  # Initial search std.
    # Search in standardised inputs (ours; dream mode): the ES searches weights θ for C's inputs divided by their RMS
    # over M's states on the recorded episodes (z, c, h differ in scale by an order of magnitude), so one step size
    # and an isotropic start suit every input; the controller saved is w = θ / RMS, which reads the raw inputs.
    # false: the ES searches w itself (original).
    scale_inputs: bool = False
    # CMA-ES mean learning rate (evosax c_mean; 1 = the standard update). Below 1 the mean moves a fraction of the
    # way to the recombined best candidates each generation: it averages a noisy fitness over ~1/c_mean generations.
    c_mean: float = 1.0
    # CMA-ES: decompose the covariance (eigh, O(n³)) only every k-th generation and sample with the stored B, D in
    # between (Hansen's lazy update; ours). 1: every generation (evosax's CMA_ES as is, the original); 0: Hansen's
    # schedule k = max(1, ⌊1 / (10·n·(c_1 + c_μ))⌋), from the sizes. A controller with 18 actions on [z, h] has
    # n = 5,202 parameters, where one eigh costs ~5 s on 2 cores, more than the generation's dream rollouts.
    eigen_every: int = 1
    weight_decay: float = 0.0  # L2 penalty on parameters added to the fitness (original option: 0.01).
    temperature: float = 1.15  # Dream temperature tau (paper's best Doom: 1.15).
    taus: tuple[float, ...] = (0.10, 0.50, 1.00, 1.15, 1.30)  # Sweep values (paper's table).
    dream_max_steps: int = 2100  # Dream episode cap (paper Doom: 2100).
    initial_states: int = 1000  # Real episode starts kept as the dream's initial-state bank (original).
    done_mode: str = "threshold"  # Dream episode end: "threshold" (done logit > 0) or "bernoulli".
    # Bernoulli ends: the calibrated probability (÷ mdnrnn.done_horizon) times this; > 1 a harsher dream, where a
    # state M calls deadly ends the episode sooner (ours; 1 = the calibrated probability).
    done_scale: float = 1.0
    # Dynamics ensemble (ours; wm_jax.envs.dream): the dream's z', reward and end come from this many Ms, trained
    # the same way on the same data (member e >= 1: `train-mdnrnn --member e`, <run>/mdnrnn_<e>; the pipeline's
    # iterate rounds train them further with M); trial i of every candidate runs in member i mod E's dream while C
    # reads M's state as in the real env. 1: M alone (original).
    dream_models: int = 1
    # Held-out selection (ours): the periodic evaluations of the ES mean, which pick the final controller, also run
    # in member e's dream (<run>/mdnrnn_<e>, trained like M with its own init and batch order; e >= dream_models,
    # a model C never trained in), C reading M as in the game, and the best there wins. M's own dream rewards
    # controllers that exploit its errors; a second model's does not, and ranks them as the game does.
    # 0: the best evaluation in M's own dream wins (original).
    select_model: int = 0
    eval_every: int = 10  # Generations between evaluations of the ES mean.
    eval_trials: int = 64  # Trials when evaluating the ES mean.
    generations_per_call: int = 1  # Generations fused into one compiled call.
    checkpoint_every: int = 1  # Generations between ES checkpoints.
    seed: int = 0
    dream_chunk: int = 50  # Dream steps per early-exit check (while_loop over scanned chunks; our choice).
    # Shrink the batch of dream episodes up to this many times as they end, each time to dream_compact_ratio of its
    # size (dream_batch.rollout_taus; ours): the same episodes, up to float rounding, for about the area under the
    # survival curve. A τ sweep compacts all its τ's episodes as one batch. 0: the whole batch runs until its last
    # episode ends. Measured in README, Benchmarks.
    dream_compact: int = 0
    dream_compact_ratio: float = 0.5
    unroll: int = 1  # lax.scan unroll of the dream's step loop (speed only, same returns; 1: the original loop).
    # Real mode, training episodes only (the ES mean's evaluation and `wm-jax evaluate` play whole episodes):
    real_max_steps: int = 0  # Cut each training episode after this many steps; 0 = env.max_steps.
    real_stall_steps: int = 0  # Cut it after this many steps in a row without a positive reward; 0 = never.
    # Real mode, the final choice (ours): the ES means with the `select_top` best periodic evaluations, and the last
    # mean, each play `select_trials` more held-out tracks; the best there is the final controller. 0 = the mean
    # with the best periodic evaluation wins (a max over noisy 8-track means favours a lucky one).
    select_trials: int = 0
    select_top: int = 3
    # Where the search starts (ours): a trained controller (its run folder, its controller folder or its params.npz)
    # becomes the initial ES mean, e.g. the dream's C fine-tuned in the real env. "": the controller's initialisation.
    init: str = ""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    episodes: int = 100  # Paper: mean +- std over 100 episodes.
    workers: int = 0  # Environment worker processes; 0 = one per CPU core.
    envs_per_worker: int = 1  # Environments stepped by each worker.
    seed: int = 10_000  # Evaluation seeds are disjoint from collection seeds.
    gifs: bool = True  # Write GIFs of the best and worst episode.
    groups: int = 1  # Worker blocks stepped in turn (2 = host computes one block's actions while the other steps).
    # C and M read z = mu + sigma * eps, a sample of V's posterior, as the original's real-env wrapper did (and as
    # M's training inputs and the dream's z are); false: V's mean. eps comes from the episode's seed.
    z_sample: bool = True
    mdnrnn_untrained: bool = False  # Ablation: the agent's M keeps random initial weights (seed = cfg.seed).
    vae_untrained: bool = False  # Smoke/bench only: the agent's V keeps random initial weights (seed = cfg.seed).


@dataclasses.dataclass(frozen=True)
class IterateConfig:
    """Iterative training (paper, section 5): after M, `rounds` times: train C in the dream, play `episodes`
    real episodes with it (plus exploration noise), add them to the data, train M further on all of it."""

    rounds: int = 0  # 0 = off (the paper's TakeCover and CarRacing results use none).
    episodes: int = 400  # Real episodes collected with each round's controller.
    tau: float = 1.0  # Dream temperature of each round's controller.
    epsilon: float = 0.1  # Per-step chance to start a random action held 1-10 steps (exploration).
    mdnrnn_steps: int = 1500  # M training steps added per round (resumed from its checkpoint, Adam state kept).


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"  # Run name; the run folder is checkpoints/<name> unless `root` says otherwise.
    root: str = "checkpoints"  # Folder that holds run folders.
    seed: int = 0  # Master seed for model initialisation and training.
    env: EnvConfig = EnvConfig()
    data: DataConfig = DataConfig()
    vae: VAEConfig = VAEConfig()
    mdnrnn: MDNRNNConfig = MDNRNNConfig()
    controller: ControllerConfig = ControllerConfig()
    es: ESConfig = ESConfig()
    eval: EvalConfig = EvalConfig()
    iterate: IterateConfig = IterateConfig()

    # ---- derived values: computed here, never stored ----
    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def action_dim(self) -> int:
        """Action size as stored on disk and fed to M (CarRacing: steer, gas, brake; Doom: one value)."""
        from wm_jax.envs.spec import env_spec

        return env_spec(self.env.id).action_dim

    @property
    def collect_steps(self) -> int:
        """Cap of one collected episode: data.episode_steps, or env.max_steps."""
        return min(self.data.episode_steps or self.env.max_steps, self.env.max_steps)

    @property
    def mdnrnn_members(self) -> tuple[int, ...]:
        """The models trained beside M (``train-mdnrnn --member e``): the dream's dynamics ensemble (1..E-1) and the
        held-out selection model (es.select_model)."""
        extra = (self.es.select_model,) if self.es.select_model >= self.es.dream_models else ()
        return (*range(1, self.es.dream_models), *extra)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        """Return a copy with dotted overrides applied, e.g. ``cfg.replace(**{"vae.z_dim": 64})``."""
        return _validated(merge(self.to_dict(), nest(overrides, "<replace>")))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated Config from an optional YAML file and ``key=value`` overrides."""
    values = read_yaml(Path(path)) if path else {}
    flat = dict(parse_override(o) for o in overrides)
    return _validated(merge(values, nest(flat, "the command line")))


def config_from_dict(values: dict) -> Config:
    """Rebuild a Config saved by :func:`save_config` (or any nested mapping)."""
    return _validated(values)


def _validated(values: dict) -> Config:
    cfg = build(Config, values)
    validate(cfg)
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as JSON (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_saved_config(path: str | os.PathLike) -> Config:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        return config_from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no saved config at {path}") from None
