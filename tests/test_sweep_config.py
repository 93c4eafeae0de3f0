"""Sweep config validation: every bad value is one line naming its key path."""

import pytest

from raysweep.config import ConfigError, SweepConfig, from_dict, load_sweep, parse_freeze, to_dict


def write(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_study():
    cfg = from_dict(SweepConfig, {})
    assert cfg.recipe.epochs == 50 and cfg.recipe.lr == 1e-3 and cfg.recipe.betas == (0.9, 0.999)
    assert cfg.recipe.step_size == 20 and cfg.recipe.gamma == 0.5 and cfg.recipe.dropout == 0.5
    assert cfg.compare.fraction == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert cfg.compare.freeze == ["last-linear", "pooler", "last-attention"]
    assert cfg.replicate.seed == [0, 1, 2]
    assert cfg.split.labeled_fraction == 0.2


@pytest.mark.parametrize("text, message", [
    ("recipe:\n  epochs: ten\n", "recipe.epochs: expected an integer, got 'ten'"),
    ("recipe:\n  epoch: 5\n", "recipe.epoch: unknown key"),
    ("compare:\n  freeze: [pooler, frozen]\n", "compare.freeze[1]: 'frozen' is not a freeze mode"),
    ("compare:\n  strategy: [magic]\n", "compare.strategy[0]: unknown strategy 'magic'"),
    ("selection:\n  k: 0\n", "selection.k: must be at least 1"),
    ("selection:\n  rounds: 0\n", "selection.rounds: must be at least 1 (1 is single-shot)"),
    ("selection:\n  mc_samples: 1\n", "selection.mc_samples: needs at least 2 samples to disagree"),
    ("selection:\n  K: 5\n", "selection.K: unknown key"),
    ("compare:\n  fraction: [0, -1]\n", "compare.fraction[1]: must be 0 or more"),
    ("compare:\n  pool: [web]\n", "compare.pool[0]: 'web' is not one of real, llm, llm_teacher"),
    ("recipe:\n  betas: [0.9]\n", "recipe.betas: expected 2 values, got 1"),
    ("recipe:\n  dropout: 1.5\n", "recipe.dropout: must be in [0, 1)"),
    ("encoder:\n  pooling: max\n", "encoder.pooling: 'max' is not one of pooler, cls, mean"),
    ("replicate:\n  seed: [0, 0]\n", "replicate.seed: has a repeated value"),
    ("compare:\n  freeze: [lora, pooler, lora-r8-k1]\n",
     "compare.freeze[2]: 'lora-r8-k1' trains the same model as freeze[0] 'lora'; keep one of them"),
    ("compare:\n  freeze: [last-attention, top-1]\n", "compare.freeze[1]: 'top-1' trains the same model as freeze[0]"),
    ("split:\n  stratify: yes please\n", "split.stratify: expected true or false, got 'yes please'"),
    ("compare:\n  fraction: [.inf]\n", "compare.fraction[0]: expected a finite number, got inf"),
    ("recipe:\n  lr: .nan\n", "recipe.lr: expected a finite number, got nan"),
    ("replicate:\n  seed: [0, -1]\n", "replicate.seed[1]: must be 0 or more"),
    ("split:\n  seed: -1\n", "split.seed: must be 0 or more"),
    ("teacher:\n  seed: -3\n", "teacher.seed: must be 0 or more"),
    ("llm:\n  seed: -1\n", "llm.seed: must be 0 or more"),
    ("llm:\n  template: \"no placeholder\\0here\"\n", "llm.template: 'no placeholder\\x00here' has no $n"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("recipe: [\n", "is not valid YAML"),
])
def test_bad_files_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, "recipe:\n  epochs: 5\n")
    cfg = load_sweep(path, ["recipe.epochs=7", "compare.fraction=[0, 2]", "replicate.seed=3"])
    assert cfg.recipe.epochs == 7
    assert cfg.compare.fraction == [0.0, 2.0]
    assert cfg.replicate.seed == [3]  # a scalar where a list is expected is a one-element list
    with pytest.raises(ConfigError, match=r"recipe.lr: expected a number, got 'fast'"):
        load_sweep(path, ["recipe.lr=fast"])
    with pytest.raises(ConfigError, match=r"--set recipe: expected key.path=value"):
        load_sweep(path, ["recipe"])
    with pytest.raises(ConfigError, match=r"recipe.epochs.x: .*epochs is not a mapping"):
        load_sweep(path, ["recipe.epochs.x=1"])


def test_round_trip_through_yaml():
    cfg = from_dict(SweepConfig, {"recipe": {"epochs": 3}, "compare": {"fraction": [1]}})
    assert from_dict(SweepConfig, to_dict(cfg)) == cfg


def test_freeze_modes_are_one_mechanism():
    assert parse_freeze("last-linear") == (0, False)
    assert parse_freeze("pooler") == (0, True)
    assert parse_freeze("last-attention") == (1, True)
    assert parse_freeze("top-3") == (3, True)
    for bad in ("top-0", "top-x", "all"):
        with pytest.raises(ConfigError):
            parse_freeze(bad)


def test_every_registered_strategy_validates():
    from raysweep.strategies import REGISTRY

    # Each on a task whose target it ranks: classes (SST-5, the default data) or scores (STS).
    for data, target in (({}, "class"), ({"name": "sts"}, "score")):
        names = sorted(n for n, s in REGISTRY.items() if target in s.targets)
        cfg = from_dict(SweepConfig, {"data": data, "compare": {"strategy": names}, "selection": {"k": 3, "rounds": 2}})
        assert cfg.compare.strategy == names
        assert (cfg.selection.k, cfg.selection.rounds, cfg.selection.mc_samples) == (3, 2, 10)
    assert {n for n, s in REGISTRY.items() if "class" not in s.targets} == {"mc-variance"}


def test_shipped_sweeps_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sweeps"
    cfg = load_sweep(root / "smoke.yaml")
    assert cfg.compare.pool == ["real"]


def test_encoder_and_pooling_can_be_compared(tmp_path):
    from raysweep.sweep import expand

    cfg = load_sweep(write(tmp_path, "compare:\n  encoder: [minilm, /models/x]\n  pooling: [cls, mean]\n"
                                     "  fraction: [0]\n  freeze: [pooler]\nreplicate:\n  seed: [0]\n"))
    cells = expand(cfg)
    assert [(c.encoder, c.pooling) for c in cells] == [("minilm", "cls"), ("minilm", "mean"), ("/models/x", "cls"),
                                                       ("/models/x", "mean")]
    assert {(c.variant.encoder, c.variant.pooling, c.variant.freeze) for c in cells} == {
        ("minilm", "cls", "pooler"), ("minilm", "mean", "pooler"), ("/models/x", "cls", "pooler"),
        ("/models/x", "mean", "pooler")}
    # without compare.encoder / compare.pooling, the fixed encoder section decides
    single = load_sweep(write(tmp_path, "encoder:\n  name: mpnet-base\n  pooling: mean\ncompare:\n  fraction: [0]\n"))
    assert {(c.encoder, c.pooling) for c in expand(single)} == {("mpnet-base", "mean")}
    with pytest.raises(ConfigError, match=r"compare.pooling\[1\]: 'max' is not one of pooler, cls, mean"):
        load_sweep(write(tmp_path, "compare:\n  pooling: [cls, max]\n"))


def test_encoders_sweeps_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "sweeps"
    for name in ("encoders.yaml", "encoders-small.yaml"):
        cfg = load_sweep(root / name)
        assert cfg.encoders == ["minilm", "mpnet-base"] and cfg.poolings == ["pooler", "cls", "mean"]


def test_every_bad_key_is_listed_one_line_each(tmp_path):
    path = write(tmp_path, "recipe:\n  epochs: ten\n  lr: .inf\ncompare:\n  fraction: [-1]\nsplit:\n  sed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["recipe.epochs", "recipe.lr", "compare.fraction[0]", "split.sed"]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_the_llm_section_is_typed_and_needs_no_import_between_the_two_config_modules():
    import ast
    from pathlib import Path

    from raysweep.llm.config import LLMConfig

    assert isinstance(from_dict(SweepConfig, {}).llm, LLMConfig)
    assert isinstance(from_dict(SweepConfig, {"llm": None}).llm, LLMConfig)
    src = Path(__file__).resolve().parents[1] / "src" / "raysweep" / "llm" / "config.py"
    imported = {node.module for node in ast.walk(ast.parse(src.read_text())) if isinstance(node, ast.ImportFrom)}
    assert "raysweep.config" not in imported and "raysweep.loader" in imported


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    assert load_sweep(write(tmp_path, "recipe:\n  lr: 1e-3\n")).recipe.lr == 0.001
