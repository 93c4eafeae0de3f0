"""LoRA freeze modes: parsing, where the adapters go per architecture, what trains, and that the
cached and uncached paths agree (logits and gradients) on the tiny BERT, RoBERTa, DistilBERT and MPNet."""

import numpy as np
import pytest
import torch

from raysweep.backbone import (Backbone, Classifier, EncoderError, FullEncoderClassifier, boundary_for,
                               count_trainable, describe_trainable, trainable_parameters)
from raysweep.config import ConfigError, SweepConfig, from_dict, parse_freeze
from raysweep.freeze.lora import Lora, lora_targets, parse_lora

from tiny import cached_and_full_gradients, make_tiny_encoder

# The tiny encoders (tests/tiny.py): 3 layers, hidden 16, feed-forward 32, 5 classes here.
HIDDEN, FFN, LAYERS, CLASSES = 16, 32, 3, 5
HEAD = HIDDEN * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES  # pooler dense + linear, as in `pooler` mode

# Where each architecture keeps its attention and feed-forward projections, written out by hand
# from the transformers source: what lora_targets must find without being told.
PROJECTIONS = {
    "bert": ("encoder.layer", ["attention.self.query", "attention.self.key", "attention.self.value",
                               "attention.output.dense"], ["intermediate.dense", "output.dense"]),
    "roberta": ("encoder.layer", ["attention.self.query", "attention.self.key", "attention.self.value",
                                  "attention.output.dense"], ["intermediate.dense", "output.dense"]),
    "distilbert": ("transformer.layer", ["attention.q_lin", "attention.k_lin", "attention.v_lin",
                                         "attention.out_lin"], ["ffn.lin1", "ffn.lin2"]),
    "mpnet": ("encoder.layer", ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"],
              ["intermediate.dense", "output.dense"]),
}


def lora_classifier(backbone, freeze, pooling="pooler", seed=0):
    boundary = boundary_for(freeze, backbone.num_layers, pooling, 32, backbone.hidden_size)
    torch.manual_seed(seed)
    return Classifier(boundary, backbone.hidden_size, CLASSES, 0.5, **backbone.trainable_top(boundary),
                      freeze=parse_lora(freeze))


def test_lora_freeze_names_parse_and_bad_ones_say_what_is_wrong():
    assert parse_lora("lora") == Lora(rank=8, layers=1) == parse_lora("lora-r8-k1")
    assert parse_lora("lora-r4-k2-ffn") == Lora(rank=4, layers=2, feed_forward=True)
    assert parse_lora("lora-r16-k12").alpha == 32
    assert parse_lora("pooler") is None and parse_lora("top-2") is None
    assert parse_freeze("lora-r4-k2") == (2, True) and parse_freeze("lora") == (1, True)
    for bad in ("lora-r0-k1", "lora-r4-k0", "lora-r4", "lora-k2", "lora-r4-k2-mlp", "lora-rx-k1", "lora2"):
        with pytest.raises(ConfigError, match="not a LoRA freeze mode"):
            parse_lora(bad)
    with pytest.raises(ConfigError, match=r"freeze\[1\]: 'lora-r0-k1' is not a LoRA freeze mode"):
        from_dict(SweepConfig, {"compare": {"freeze": ["pooler", "lora-r0-k1"]}})
    with pytest.raises(ConfigError, match="lora or lora-rR-kK"):
        parse_freeze("frozen")


@pytest.mark.parametrize("arch", sorted(PROJECTIONS))
def test_adapters_go_on_each_architectures_own_projections(arch, tmp_path):
    backbone = Backbone(make_tiny_encoder(arch, tmp_path))
    boundary = boundary_for("top-2", backbone.num_layers, "pooler", 32)
    top = backbone.trainable_top(boundary)["top"]
    layers, attention, feed_forward = PROJECTIONS[arch]
    expected = [f"{layers}.{i}.{n}" for i in range(2) for n in attention]
    assert sorted(lora_targets(top, 2, feed_forward=False)) == sorted(expected)
    with_ffn = expected + [f"{layers}.{i}.{n}" for i in range(2) for n in feed_forward]
    assert sorted(lora_targets(top, 2, feed_forward=True)) == sorted(with_ffn)
    # peft's own table of default LoRA targets (query and value projections), where it has the
    # model type, agrees with what was found by structure.
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    for short in PEFT_DEFAULTS.get(backbone.model.config.model_type, []):
        assert any(t.endswith("." + short) for t in lora_targets(top, 2, feed_forward=False)), short


@pytest.mark.parametrize("arch", sorted(PROJECTIONS))
def test_only_adapters_pooler_and_head_train_and_the_count_is_the_low_rank_one(arch, tmp_path):
    backbone = Backbone(make_tiny_encoder(arch, tmp_path))
    clf = lora_classifier(backbone, "lora-r2-k2")
    names = describe_trainable(clf)
    adapters = [n for n in names if n.startswith("top.")]
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert names[-4:] == ["dense.weight", "dense.bias", "linear.weight", "linear.bias"]
    # rank r on a d_in x d_out projection adds r * (d_in + d_out): 4 attention projections per layer
    assert count_trainable(clf) == 2 * 4 * 2 * (HIDDEN + HIDDEN) + HEAD
    ffn = 2 * (2 * (HIDDEN + FFN) * 2)  # 2 layers x (up and down projection) at rank 2
    assert trainable_parameters(backbone, "lora-r2-k2-ffn", CLASSES) == 2 * 4 * 2 * (HIDDEN + HIDDEN) + ffn + HEAD
    # the counts the other modes report, for scale: last-attention trains a whole layer
    assert trainable_parameters(backbone, "pooler", CLASSES) == HEAD
    assert trainable_parameters(backbone, "last-attention", CLASSES) > count_trainable(clf)
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_a_lora_mode_that_does_not_fit_the_encoder_is_refused(tiny_bert):
    backbone = Backbone(tiny_bert)
    with pytest.raises(EncoderError, match="trains 4 layers but the encoder has 3"):
        trainable_parameters(backbone, "lora-r2-k4", CLASSES)
    with pytest.raises(EncoderError, match="rank 17 is larger than the encoder's hidden size 16"):
        trainable_parameters(backbone, "lora-r17-k1", CLASSES)


def test_lora_starts_as_the_pretrained_top_and_training_moves_only_the_adapters(tiny_bert):
    backbone = Backbone(tiny_bert)
    boundary = boundary_for("top-2", backbone.num_layers, "mean", 32)
    plain = Classifier(boundary, HIDDEN, CLASSES, 0.5, **backbone.trainable_top(boundary))
    adapted = lora_classifier(backbone, "lora-r4-k2-ffn", "mean")
    x = torch.randn(3, 7, HIDDEN)
    mask = torch.ones(3, 7, dtype=torch.long)
    plain.eval(), adapted.eval()
    with torch.no_grad():  # lora_B starts at zero: the adapted top computes the pretrained top
        torch.testing.assert_close(adapted.sentence_vector(x, mask), plain.sentence_vector(x, mask))
        torch.testing.assert_close(adapted.top(inputs_embeds=x, attention_mask=mask).last_hidden_state,
                                   plain.top(inputs_embeds=x, attention_mask=mask).last_hidden_state)
    frozen = {n: p.detach().clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    adapted.train()
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(adapted(x, mask), torch.tensor([0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert frozen and all(torch.equal(p, frozen[n]) for n, p in adapted.named_parameters() if n in frozen)
    assert any(p.abs().sum() > 0 for n, p in adapted.named_parameters() if ".lora_B." in n)


@pytest.mark.parametrize("freeze", ["lora-r2-k1", "lora-r2-k2-ffn"])
@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_cached_and_full_paths_give_the_same_lora_logits_and_gradients(tiny_encoder, tmp_path, freeze, pooling):
    """For BERT, RoBERTa, DistilBERT and MPNet: a LoRA trial on cached token states computes what
    it would compute running the frozen layers below on every step."""
    backbone = Backbone(tiny_encoder)
    backbone.model.train()  # dropout would be on if the frozen part did not force eval mode
    cached = lora_classifier(backbone, freeze, pooling)
    full = FullEncoderClassifier(backbone, lora_classifier(backbone, freeze, pooling))
    # B starts at zero, which would make every lora_A gradient zero in both paths and prove
    # nothing about them: give both models the same non-zero B.
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for (name, p), (_, q) in zip(cached.named_parameters(), full.classifier.named_parameters()):
            if ".lora_B." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
                q.copy_(p)
    grads = cached_and_full_gradients(cached, full, tiny_encoder, tmp_path)
    assert any(".lora_A." in n for n in grads) and any(".lora_B." in n for n in grads)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name  # every adapter learns something from this batch


def test_a_lora_trial_records_its_trainable_count_and_its_scoring_model_is_its_own(tiny_bert, tmp_path):
    """LoRA shares top-K's activation entry: the trial and the scoring cache must still tell them apart."""
    from raysweep import model as modeling
    from raysweep.config import RecipeConfig, SelectionConfig
    from raysweep.embed import ensure_activations, load_activations
    from raysweep.train import Cell, TrialInputs

    from tiny import run_trial

    from tiny import TINY_TEXTS

    backbone = Backbone(tiny_bert)
    recipe = RecipeConfig(epochs=2, batch_size=4)
    [path] = ensure_activations(tiny_bert, TINY_TEXTS * 4, [boundary_for("top-2", LAYERS, "pooler", 32)], tmp_path,
                                use_ray=False, log=lambda *_: None)
    acts = load_activations(path)
    assert boundary_for("lora-r2-k2", LAYERS, "pooler", 32) == acts.boundary  # one cache entry for both

    def inputs(freeze):
        return TrialInputs(train_labels=np.arange(32) % CLASSES, val_labels=np.arange(32) % CLASSES,
                           labeled=np.arange(8), pool_rows=np.arange(8, 32), train_acts=acts, val_acts=acts,
                           num_classes=CLASSES, cache_dir=str(tmp_path / "scoring"), freeze=parse_lora(freeze))

    lora = run_trial(Cell("real", "entropy", 1, "lora-r2-k2", 0), inputs("lora-r2-k2"), recipe, SelectionConfig())
    top = run_trial(Cell("real", "entropy", 1, "top-2", 0), inputs("top-2"), recipe, SelectionConfig())
    assert lora["trainable_params"] == trainable_parameters(backbone, "lora-r2-k2", CLASSES) == 2 * 4 * 2 * 32 + HEAD
    assert top["trainable_params"] == trainable_parameters(backbone, "top-2", CLASSES) > lora["trainable_params"]
    rows, labels = np.arange(8), np.arange(8) % CLASSES
    keys = {modeling.model_key(acts, rows, labels, CLASSES, recipe, 0, parse_lora(f)) for f in ("top-2", "lora-r2-k2",
                                                                                               "lora-r4-k2")}
    assert len(keys) == 3
    # the Ray Data actors' copy: a LoRA model rebuilt from its state scores exactly as the original
    model = modeling.trained_model(acts, rows, labels, CLASSES, recipe, 0, tmp_path / "scoring", parse_lora("lora-r2-k2"))
    copy = modeling.rebuild(acts, model.state_dict(), recipe.dropout, model.freeze)
    from raysweep.model import predict_proba

    np.testing.assert_array_equal(predict_proba(copy, acts), predict_proba(model, acts))


def test_check_prints_the_trainable_count_per_freeze_mode_and_refuses_a_mode_too_deep(tiny_bert, tmp_path):
    from click.testing import CliRunner

    from raysweep.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"encoder: {{name: {tiny_bert}}}\ncompare: {{freeze: [pooler, lora-r2-k2, lora-r2-k2-ffn]}}\n"
                     f"replicate: {{seed: [0]}}\n")
    result = CliRunner().invoke(main, ["check", str(sweep)])
    assert result.exit_code == 0, result.output
    assert f"trainable parameters ({tiny_bert}): pooler {HEAD:,}, lora-r2-k2 {2 * 4 * 2 * 32 + HEAD:,}, " \
           f"lora-r2-k2-ffn {2 * 4 * 2 * 32 + 2 * 2 * 2 * 48 + HEAD:,}" in result.output
    result = CliRunner().invoke(main, ["check", str(sweep), "--set", "compare.freeze=[lora-r2-k4]"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "error: freeze 'lora-r2-k4' trains 4 layers but the encoder has 3"


def test_cell_ids_are_frozen_and_a_lora_mode_is_one_more_freeze_string():
    """LoRA added no field to the cell id: the freeze string tells the modes apart, and the ids of
    the existing modes are those computed before LoRA existed (values frozen here)."""
    from raysweep.grid import cell_id, fixed_digest, selection_settings
    from raysweep.train import Cell

    cfg = from_dict(SweepConfig, {})
    fixed = fixed_digest(cfg)

    def cid(freeze, strategy="random"):
        return cell_id(Cell("real", strategy, 1.0, freeze, 0), fixed, selection_settings(strategy, cfg.selection))

    assert cid("pooler") == "7222ef7cbfbab227" and cid("last-attention") == "01907905502cfc79"
    assert cid("lora-r8-k1") == "74a456efdb38f79f" and cid("lora-r8-k2-ffn") == "d609dac789439cec"
    assert cid("lora-r8-k1", "entropy") == "c33e7e901bf201b4"
