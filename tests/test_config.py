"""Config loading: unknown keys and wrong types name the key, YAML extends, overrides, saved round trip."""

import json
from pathlib import Path

import pytest

from wm_jax.config import Config, ConfigError, load_config, load_saved_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_derived_values():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.run_dir == Path("checkpoints/default") and cfg.data_dir == Path("checkpoints/default/data")
    assert cfg.action_dim == 1
    assert load_config(None, ["env.name=carracing"]).action_dim == 3


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.episodez'"):
        load_config(None, ["data.episodez=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'nosection'"):
        load_config(None, ["nosection.x=1"])


def test_unknown_key_in_yaml_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("vae:\n  zdim: 3\n")
    with pytest.raises(ConfigError, match=r"'vae\.zdim'"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("override, key", [
    ("data.episodes=abc", "data.episodes"),
    ("data.episodes=1.5", "data.episodes"),
    ("data.skip_corrupt=1", "data.skip_corrupt"),
    ("env.carracing_fast_render=yes please", "env.carracing_fast_render"),
    ("env=3", "env"),
])
def test_wrong_type_is_named(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, [override])


@pytest.mark.parametrize("override, key", [
    ("env.name=pong", "env.name"),
    ("data.compress_level=10", "data.compress_level"),
    ("data.min_length=0", "data.min_length"),
    ("env.carracing_policy=uniform", "env.carracing_policy"),
    ("env.max_steps=0", "env.max_steps"),
    ("iterate.epsilon=1.5", "iterate.epsilon"),
    ("iterate.rounds=-1", "iterate.rounds"),
    ("iterate.episodes=0", "iterate.episodes"),
    ("vae.fireball_weight=-1", "vae.fireball_weight"),
    ("vae.foreground_weight=-1", "vae.foreground_weight"),
    ("vae.foreground_weight=10", "vae.foreground_weight"),  # the default env is not atari
    ("vae.logvar_init=-30", "vae.logvar_init"),
    ("mdnrnn.done_horizon=0", "mdnrnn.done_horizon"),
    ("mdnrnn.head_dropout=1.0", "mdnrnn.head_dropout"),
    ("mdnrnn.head_dropout=-0.1", "mdnrnn.head_dropout"),
    ("env.doom_skill=6", "env.doom_skill"),
    ("es.dream_models=0", "es.dream_models"),
    ("es.dream_models=17", "es.dream_models"),  # more models than the 16 trials
    ("es.done_scale=0", "es.done_scale"),
    ("es.done_scale=2", "es.done_scale"),  # the default done_mode is threshold, which has no probability to scale
    ("es.dream_compact=-1", "es.dream_compact"),
    ("es.dream_compact_ratio=1.0", "es.dream_compact_ratio"),
    ("es.dream_compact_ratio=0", "es.dream_compact_ratio"),
    ("es.select_model=-1", "es.select_model"),
    ("es.select_model=1 es.dream_models=2", "es.select_model"),  # member 1 is in the dream C trains in
    ("es.scale_inputs=true es.mode=real", "es.scale_inputs"),  # dream mode only
])
def test_invalid_value_is_named(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, override.split())


def test_fireball_weight_is_takecover_only():
    assert load_config(None, ["vae.fireball_weight=10"]).vae.fireball_weight == 10.0
    with pytest.raises(ConfigError, match="'vae.fireball_weight': fireballs exist in takecover only"):
        load_config(None, ["env.name=carracing", "vae.fireball_weight=10"])


def test_yaml_extends_and_overrides():
    cfg = load_config(CONFIGS / "quick.yaml")
    assert cfg.name == "quick"  # quick.yaml's own value
    assert cfg.data.episodes == 240  # quick.yaml overrides takecover.yaml's 10000
    assert cfg.mdnrnn.restart_flag is True and cfg.controller.inputs == "zch"  # inherited from takecover.yaml
    assert cfg.data.seed == 0  # dataclass default, set by neither file
    cfg = load_config(CONFIGS / "quick.yaml", ["data.episodes=7", "es.taus=0.5,1.0", "vae.epochs=3"])
    assert cfg.data.episodes == 7 and cfg.es.taus == (0.5, 1.0) and cfg.vae.epochs == 3.0


def test_extends_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "carracing.yaml", ["data.episodes=5", "es.taus=0.1,2.0", "root=/x"])
    save_config(cfg, tmp_path / "run" / "config.json")
    assert not list((tmp_path / "run").glob("*.tmp*"))
    assert load_saved_config(tmp_path / "run") == cfg
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["episodes"] == 5
    with pytest.raises(ConfigError, match="no saved config"):
        load_saved_config(tmp_path / "elsewhere")


def test_carracing_table_rejects_unknown_rows_before_work(tmp_path):
    from wm_jax.pipeline import Experiment
    from wm_jax.pipeline_carracing import carracing_table

    exp = Experiment("t", "configs/carracing_cpu.yaml", [f"root={tmp_path}"], results_root=tmp_path / "results")
    with pytest.raises(ValueError, match="unknown CarRacing table rows \\['fast'\\]"):
        carracing_table(exp, ("full", "fast"))
    assert not (tmp_path / "carracing_cpu").exists()  # nothing collected


def test_real_es_cut_keys_validated():
    cfg = load_config("configs/carracing_cpu.yaml")
    assert (cfg.es.real_max_steps, cfg.es.real_stall_steps, cfg.env.max_steps) == (600, 60, 1000)
    with pytest.raises(ConfigError, match="es.real_stall_steps"):
        load_config("configs/carracing_cpu.yaml", ["es.real_stall_steps=-1"])


def test_es_mean_rate_validated():
    assert load_config("configs/carracing_cpu.yaml", ["es.c_mean=0.2"]).es.c_mean == 0.2
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=r"'es.c_mean'.*\(0, 1\]"):
            load_config("configs/carracing_cpu.yaml", [f"es.c_mean={bad}"])


def test_experiment_times_reset_when_run_folder_is_gone(tmp_path):
    from wm_jax.pipeline import Experiment

    args = ("t", "configs/quick.yaml", [f"root={tmp_path}"])
    exp = Experiment(*args, results_root=tmp_path / "results")
    (tmp_path / "quick").mkdir()
    exp._record("collect", 5.0)
    assert Experiment(*args, results_root=tmp_path / "results").times == {"collect": 5.0}  # resumed run: summed
    (tmp_path / "quick").rmdir()  # the run was deleted: a new run must not inherit its seconds
    assert Experiment(*args, results_root=tmp_path / "results").times == {}


def test_iterate_rounds_train_the_models_beside_m_further_too(tmp_path, monkeypatch):
    """With a dynamics ensemble and a held-out model, every round trains M and each of them to the same raised
    mdnrnn.steps on the round's data (a member left on the random data alone would dream another game)."""
    from wm_jax import pipeline

    calls = []

    def record(name):
        return lambda cfg, *a, member=0, **k: calls.append((name, member, cfg.mdnrnn.steps))

    for name in ("collect", "train_vae", "encode", "train_mdnrnn", "train_controller", "collect_agent"):
        monkeypatch.setattr(pipeline.stages, name, record(name))
    exp = pipeline.Experiment("t", "configs/quick.yaml", [f"root={tmp_path}", "es.dream_models=2", "es.select_model=3",
                                                         "iterate.rounds=2", "mdnrnn.steps=10",
                                                         "iterate.mdnrnn_steps=5"], results_root=tmp_path / "r")
    exp.world_model()
    models = [(m, s) for name, m, s in calls if name == "train_mdnrnn"]
    assert models == [(0, 10), (1, 10), (3, 10), (0, 15), (1, 15), (3, 15), (0, 20), (1, 20), (3, 20)]
    assert "iterate 1 train-mdnrnn member 3" in exp.times and "iterate 1 train-mdnrnn" in exp.times


def test_cached_evaluation_is_redone_when_the_controller_weights_change(tmp_path):
    import numpy as np

    from wm_jax.io import controller_digest
    from wm_jax.pipeline import Experiment

    exp = Experiment("t", "configs/quick.yaml", [f"root={tmp_path}"], results_root=tmp_path / "results")
    ctrl, out = tmp_path / "ctrl", tmp_path / "eval" / "results.json"
    ctrl.mkdir()
    calls = []

    def fake_stage(label, fn, *args, **kwargs):  # stands in for stages.evaluate: a score from the weights it reads
        assert fn.__name__ == "evaluate" and kwargs["controller"] == ctrl
        calls.append(label)
        w = np.load(ctrl / "params.npz")["w"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"mean": float(w.sum()), "std": 0.0}))

    exp.stage = fake_stage
    np.savez(ctrl / "params.npz", w=np.ones(3, np.float32))
    digest = controller_digest(ctrl)
    assert exp.evaluate("e", out, "x", controller=ctrl)["mean"] == 3.0 and calls == ["e"]
    np.savez(ctrl / "params.npz", w=np.ones(3, np.float32))  # rewritten, same weights (ES rerun): cached
    assert controller_digest(ctrl) == digest
    assert exp.evaluate("e", out, "x", controller=ctrl)["mean"] == 3.0 and calls == ["e"]
    np.savez(ctrl / "params.npz", w=np.full(3, 2.0, np.float32))  # new weights (retrained): scored again
    assert controller_digest(ctrl) != digest
    assert exp.evaluate("e", out, "x", controller=ctrl)["mean"] == 6.0 and calls == ["e", "e"]


# ---------------------------------------------------------------- numbers as written, showing, comparing, resuming


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("3E5", 3e5), (".5", 0.5), ("-2.5e-3", -2.5e-3),
                                         ("2", 2.0), ("1.0e-4", 1e-4), ("+7.", 7.0)])
def test_float_keys_accept_scientific_notation(tmp_path, text, value):
    """YAML 1.1 reads 1e-4 and 3E5 (no dot, or a capital E) as strings; float keys take them as numbers, on the
    command line, in a YAML file and in a list of floats."""
    assert load_config(None, [f"vae.learning_rate={text}"]).vae.learning_rate == value
    tau = text.lstrip("+-")  # temperatures must be > 0
    (tmp_path / "c.yaml").write_text(f"vae:\n  learning_rate: {text}\nes:\n  taus: [{tau}, 1.3]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.vae.learning_rate == value and cfg.es.taus == (abs(value), 1.3)
    assert load_config(None, [f"es.taus={tau},2"]).es.taus == (abs(value), 2.0)


@pytest.mark.parametrize("text", ["inf", "-inf", ".inf", "nan", ".nan", "1e999"])
def test_non_finite_floats_are_refused_by_key(tmp_path, text):
    with pytest.raises(ConfigError, match=r"config key 'vae.learning_rate' must be a finite number"):
        load_config(None, [f"vae.learning_rate={text}"])
    (tmp_path / "c.yaml").write_text(f"es:\n  taus: [0.5, {text}]\n")
    with pytest.raises(ConfigError, match=r"config key 'es.taus\[1\]' must be a finite number"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("text", ["1e", "e5", "1.2.3", "0x1p3", "true"])
def test_non_numbers_are_still_refused_for_float_keys(text):
    with pytest.raises(ConfigError, match=r"config key 'vae.learning_rate' expects float"):
        load_config(None, [f"vae.learning_rate={text}"])


@pytest.mark.parametrize("path", [None, *sorted(CONFIGS.glob("*.yaml"))], ids=lambda p: p.name if p else "defaults")
def test_format_config_round_trips(tmp_path, path):
    from wm_jax.config_show import format_config

    cfg = load_config(path)
    (tmp_path / "shown.yaml").write_text(format_config(cfg))
    assert load_config(tmp_path / "shown.yaml") == cfg


def test_format_config_keeps_odd_values_and_shows_each_fields_doc(tmp_path):
    from wm_jax.config_show import format_config

    cfg = load_config(CONFIGS / "quick.yaml", ["vae.learning_rate=1e-10", "es.taus=1e-3,2", "root=/tmp/a b"])
    cfg = cfg.replace(**{"name": "yes", "es.init": "1e-4"})  # strings YAML would read as a bool and a number
    text = format_config(cfg)
    (tmp_path / "shown.yaml").write_text(text)
    assert load_config(tmp_path / "shown.yaml") == cfg
    lines = text.splitlines()
    assert "  learning_rate: 1.0e-10  # Adam (original)." in lines
    assert "name: 'yes'  # Run name; the run folder is checkpoints/<name> unless `root` says otherwise." in lines
    # a long doc goes above its key, wrapped; a doc continued on the next source line is kept whole
    at = lines.index("  scale_inputs: false")
    assert lines[at - 4].startswith("  # Search in standardised inputs (ours; dream mode)")
    assert any("halves the mean length" in line for line in lines[lines.index("  doom_sweep_random_leg: 0.0") - 2:])
    assert "# Iterative training (paper, section 5)" in text  # the section's class docstring
    assert "EnvConfig(" not in text  # not dataclass's generated signature


def test_config_diff_names_dotted_keys():
    from wm_jax.config_show import config_diff

    a = load_config(None)
    b = a.replace(**{"vae.z_dim": 64, "es.taus": (0.5,), "name": "other"})
    assert config_diff(a, a) == []
    assert config_diff(a, b) == ["es.taus", "name", "vae.z_dim"]


def test_resume_with_a_changed_key_is_refused_by_name(tmp_path):
    from wm_jax.checkpoint import check_resume_config

    saved = load_config(None, ["mdnrnn.steps=100"])
    save_config(saved, tmp_path / "mdnrnn" / "config.json")
    folder = tmp_path / "mdnrnn"
    assert check_resume_config(tmp_path / "fresh", saved) == []  # nothing saved yet: a new stage
    assert check_resume_config(folder, saved) == []
    changed = load_config(None, ["mdnrnn.steps=100", "mdnrnn.learning_rate=1e-4", "seed=3"])
    with pytest.raises(ConfigError, match=r"mdnrnn\.learning_rate: 0\.001 -> 0\.0001, seed: 0 -> 3.*"
                                          r"--allow-config-change") as e:
        check_resume_config(folder, changed)
    assert str(folder) in str(e.value)
    assert check_resume_config(folder, changed, allow=True) == ["mdnrnn.learning_rate", "seed"]


def test_resume_that_only_extends_the_run_passes(tmp_path):
    """The pipeline's iterate rounds resume M with mdnrnn.steps raised; more generations, more episodes, a new
    run name or logging cadence change no result either."""
    from wm_jax.checkpoint import check_resume_config, resume_allowed

    saved = load_config(None, ["mdnrnn.steps=100"])
    save_config(saved, tmp_path / "config.json")
    longer = saved.replace(**{"mdnrnn.steps": 1600, "es.generations": 400, "data.episodes": 500, "name": "x",
                              "mdnrnn.log_every": 7, "eval.episodes": 3})
    assert check_resume_config(tmp_path, longer) == ["data.episodes", "es.generations", "eval.episodes",
                                                     "mdnrnn.log_every", "mdnrnn.steps", "name"]
    assert resume_allowed("eval.workers") and not resume_allowed("evaluate") and not resume_allowed("es.population")
