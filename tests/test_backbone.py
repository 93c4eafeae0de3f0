"""Freeze modes and the activation cache, on a tiny random BERT (no download)."""

import json

import numpy as np
import pytest
import torch

from raysweep.backbone import (Backbone, Classifier, FullEncoderClassifier, boundary_for, describe_trainable, pad_ragged,
                               pool)
from raysweep.embed import ensure_activations, load_activations

from tiny import TINY_TEXTS, cached_and_full_gradients


def classifier(backbone, freeze, pooling="pooler", seed=0):
    boundary = boundary_for(freeze, backbone.num_layers, pooling, 32)
    torch.manual_seed(seed)
    return Classifier(boundary, backbone.hidden_size, 5, 0.5, **backbone.trainable_top(boundary))


def test_freeze_modes_train_exactly_their_parameters(tiny_bert):
    backbone = Backbone(tiny_bert)
    assert describe_trainable(classifier(backbone, "last-linear")) == ["linear.weight", "linear.bias"]
    assert describe_trainable(classifier(backbone, "pooler")) == ["dense.weight", "dense.bias", "linear.weight",
                                                                 "linear.bias"]
    names = describe_trainable(classifier(backbone, "last-attention"))
    layer_params = [n for n in names if n.startswith("top.")]
    assert layer_params and all(n.startswith("top.encoder.layer.0.") for n in layer_params)
    reference = {f"encoder.layer.2.{n.split('top.encoder.layer.0.', 1)[1]}" for n in layer_params}
    assert reference == {n for n in backbone.model.state_dict() if n.startswith("encoder.layer.2.")}
    assert names[-4:] == ["dense.weight", "dense.bias", "linear.weight", "linear.bias"]
    two = describe_trainable(classifier(backbone, "top-2"))
    assert {n.split(".")[3] for n in two if n.startswith("top.")} == {"0", "1"}
    # the frozen encoder itself has nothing to train
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_pooler_dense_without_a_pretrained_pooler_is_seeded(tmp_path):
    """DistilBERT has no pooler: pooler mode trains a new dense whose start does not depend on luck."""
    from tiny import make_tiny_encoder

    backbone = Backbone(make_tiny_encoder("distilbert", tmp_path))
    b = boundary_for("pooler", backbone.num_layers, "cls", 32)
    torch.manual_seed(1)
    first = backbone.trainable_top(b)["dense"].weight
    torch.manual_seed(2)
    second = backbone.trainable_top(b)["dense"].weight
    assert torch.equal(first, second)


def test_trainable_top_starts_from_the_pretrained_weights(tiny_bert):
    backbone = Backbone(tiny_bert)
    clf = classifier(backbone, "last-attention")
    assert torch.equal(clf.dense.weight, backbone.model.pooler.dense.weight)
    assert torch.equal(clf.top.encoder.layer[0].output.dense.weight, backbone.model.encoder.layer[2].output.dense.weight)
    clf.dense.weight.data += 1  # a copy: training the top never touches the frozen encoder
    assert not torch.equal(clf.dense.weight, backbone.model.pooler.dense.weight)


@pytest.mark.parametrize("freeze", ["last-linear", "pooler", "last-attention", "top-2"])
@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_cached_and_full_paths_give_the_same_logits_and_gradients(tiny_encoder, tmp_path, freeze, pooling):
    """For BERT, RoBERTa, DistilBERT and MPNet, every freeze mode and pooling."""
    backbone = Backbone(tiny_encoder)
    backbone.model.train()  # dropout would be on if the frozen part did not force eval mode
    cached = classifier(backbone, freeze, pooling)
    full = FullEncoderClassifier(backbone, classifier(backbone, freeze, pooling))
    cached_and_full_gradients(cached, full, tiny_encoder, tmp_path)


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_top_layers_reproduce_the_encoders_output(tiny_encoder, pooling):
    """The truncated top run on cached states gives the full encoder's output and sentence vector."""
    backbone = Backbone(tiny_encoder)
    boundary = boundary_for("top-2", backbone.num_layers, pooling, 32)
    top = backbone.trainable_top(boundary)["top"].eval()
    enc = backbone.tokenize(TINY_TEXTS, 32)
    with torch.no_grad():
        reference = backbone.model(**enc).last_hidden_state
        x, mask = pad_ragged(backbone.features(TINY_TEXTS, boundary))
        ours = top(inputs_embeds=x, attention_mask=mask).last_hidden_state
        for i, n in enumerate(enc["attention_mask"].sum(1).tolist()):
            torch.testing.assert_close(ours[i, :n], reference[i, :n], rtol=1e-5, atol=1e-6)
        # the sentence vector the head sees in last-linear mode: pooled, through the frozen pooler if any
        sentence = boundary_for("last-linear", backbone.num_layers, pooling, 32)
        vec = torch.from_numpy(backbone.features(TINY_TEXTS, sentence))
        expected = pool(reference, enc["attention_mask"], pooling)
        pooler = getattr(backbone.model, "pooler", None)
        if pooling == "pooler" and pooler is not None:
            expected = torch.tanh(pooler.dense(expected))
        torch.testing.assert_close(vec, expected, rtol=1e-5, atol=1e-6)


def test_cache_is_content_addressed(tiny_bert, tmp_path):
    backbone = Backbone(tiny_bert)
    b = boundary_for("pooler", backbone.num_layers, "pooler", 32)
    logs = []
    [first] = ensure_activations(tiny_bert, TINY_TEXTS, [b], tmp_path, use_ray=False, log=logs.append)
    [again] = ensure_activations(tiny_bert, TINY_TEXTS, [b], tmp_path, use_ray=False, log=logs.append)
    [other] = ensure_activations(tiny_bert, TINY_TEXTS[:-1], [b], tmp_path, use_ray=False, log=logs.append)
    assert first == again and first != other
    assert len(logs) == 2  # the second call computed nothing
    acts = load_activations(first)
    assert acts.features.shape == (len(TINY_TEXTS), backbone.hidden_size)
    np.testing.assert_allclose(acts.features, backbone.features(TINY_TEXTS, b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # starts Ray
def test_ray_data_and_in_process_give_the_same_activations(tiny_bert, tmp_path, ray_local):
    backbone = Backbone(tiny_bert)
    texts = TINY_TEXTS * 5  # 40 rows over several blocks and two actors
    boundaries = [boundary_for(f, backbone.num_layers, "pooler", 32) for f in ("last-linear", "last-attention")]
    local = ensure_activations(tiny_bert, texts, boundaries, tmp_path / "local", use_ray=False, batch_size=4,
                               log=lambda *_: None)
    logs = []
    remote = ensure_activations(tiny_bert, texts, boundaries, tmp_path / "ray", use_ray=True, batch_size=4,
                                actors=2, log=logs.append, min_ray_rows=0)
    assert logs[-1].endswith("(Ray Data)")
    for a, b in zip(local, remote):
        x, y = load_activations(a), load_activations(b)
        np.testing.assert_allclose(x.features, y.features, rtol=1e-5, atol=1e-6)
        if x.offsets is not None:
            assert x.offsets.tolist() == y.offsets.tolist()


def test_text_sets_share_one_pass_and_match_single_sets(tiny_bert, tmp_path):
    from raysweep.embed import ensure_activation_sets

    backbone = Backbone(tiny_bert)
    bs = [boundary_for(f, backbone.num_layers, "mean", 32) for f in ("pooler", "last-attention")]
    logs = []
    together = ensure_activation_sets(tiny_bert, {"train": TINY_TEXTS[2:], "val": TINY_TEXTS[:3]}, bs,
                                      tmp_path / "a", use_ray=False, batch_size=2, log=logs.append)
    assert len(logs) == 1 and logs[0].startswith("encoded 9 rows and cached their pooled vectors and the token states entering layer ")
    for name, texts in (("train", TINY_TEXTS[2:]), ("val", TINY_TEXTS[:3])):
        alone = ensure_activations(tiny_bert, texts, bs, tmp_path / "b", use_ray=False, log=lambda *_: None)
        assert [p.name for p in alone] == [p.name for p in together[name]]  # same content, same key
        for x, y in zip(together[name], alone):
            np.testing.assert_allclose(load_activations(x).features, load_activations(y).features, rtol=1e-5,
                                       atol=1e-6)


def test_token_states_under_several_poolings_are_computed_and_stored_once(tiny_bert, tmp_path):
    import os

    backbone = Backbone(tiny_bert)
    hidden = [boundary_for("last-attention", backbone.num_layers, p, 32) for p in ("pooler", "mean")]
    sentence = boundary_for("last-linear", backbone.num_layers, "mean", 32)
    logs = []
    pooler_entry, mean_entry, sentence_entry = ensure_activations(
        tiny_bert, TINY_TEXTS, hidden + [sentence], tmp_path, use_ray=False, log=logs.append)
    assert len(logs) == 1
    # Two entries (each boundary keeps its key and meta), one features file behind both.
    assert pooler_entry != mean_entry
    for name in ("features.npy", "offsets.npy"):
        assert os.stat(pooler_entry / name).st_ino == os.stat(mean_entry / name).st_ino
    x, y = load_activations(pooler_entry), load_activations(mean_entry)
    assert (x.boundary.pooling, y.boundary.pooling) == ("pooler", "mean")
    direct = backbone.features(TINY_TEXTS, hidden[1])
    np.testing.assert_allclose(y.features, np.concatenate(direct), rtol=1e-5, atol=1e-6)
    assert json.loads((mean_entry / "meta.json").read_text())["computed_with"] == f"linked from {pooler_entry.name}"
    # A third pooling later: linked from the cache, no encoder pass.
    [cls_entry] = ensure_activations(tiny_bert, TINY_TEXTS, [boundary_for("last-attention", backbone.num_layers, "cls",
                                                                          32)], tmp_path, use_ray=False,
                                     log=logs.append)
    assert len(logs) == 1 and load_activations(cls_entry).boundary.pooling == "cls"
    np.testing.assert_array_equal(load_activations(cls_entry).features, x.features)


def test_an_entry_assembled_from_two_sets_is_the_entry_of_their_concatenation(tiny_bert, tmp_path):
    from raysweep.embed import concatenate_entries, ensure_activation_sets

    backbone = Backbone(tiny_bert)
    bs = [boundary_for(f, backbone.num_layers, "pooler", 32) for f in ("pooler", "last-attention")]
    head, tail = TINY_TEXTS[:5], TINY_TEXTS[5:]
    parts = ensure_activation_sets(tiny_bert, {"head": head, "tail": tail}, bs, tmp_path / "a", use_ray=False,
                                   log=lambda *_: None)
    [direct_pooled, direct_hidden] = ensure_activations(tiny_bert, head + tail, bs, tmp_path / "b", use_ray=False,
                                                        log=lambda *_: None)
    for j, direct in enumerate((direct_pooled, direct_hidden)):
        built = concatenate_entries([parts["head"][j], parts["tail"][j]], head + tail, tmp_path / "a")
        assert built.name == direct.name  # the key an encoder pass over the concatenation would use
        x, y = load_activations(built), load_activations(direct)
        assert x.boundary == y.boundary and len(x) == len(head + tail)
        np.testing.assert_allclose(x.features, y.features, rtol=1e-5, atol=1e-6)
        if j == 1:  # token level: the tail's offsets continue where the head's tokens end
            assert x.offsets.tolist() == y.offsets.tolist()
            assert x.offsets[len(head)] == load_activations(parts["head"][j]).features.shape[0]
        meta = json.loads((built / "meta.json").read_text())
        assert meta["computed_with"] == "concatenated" and meta["rows"] == len(head + tail)
        assert concatenate_entries([parts["head"][j], parts["tail"][j]], head + tail, tmp_path / "a") == built
    with pytest.raises(ValueError, match="different encoders or boundaries"):
        concatenate_entries([parts["head"][0], parts["tail"][1]], head + tail, tmp_path / "a")
    with pytest.raises(ValueError, match="hold 8 rows, not the 7 texts"):
        concatenate_entries([parts["head"][0], parts["tail"][0]], TINY_TEXTS[:7], tmp_path / "a")


def test_a_small_pass_stays_in_process_even_when_ray_is_asked_for(tiny_bert, tmp_path):
    # No Ray running here: the 8-row pass below RAY_MIN_ENCODE_ROWS never touches it.
    b = boundary_for("last-linear", Backbone(tiny_bert).num_layers, "pooler", 32)
    logs = []
    [path] = ensure_activations(tiny_bert, TINY_TEXTS, [b], tmp_path, use_ray=True, log=logs.append)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["computed_with"] == "in-process"
    assert logs == [f"encoded {len(TINY_TEXTS)} rows and cached their sentence vectors in "
                    f"{meta['seconds']} s (in-process)"]
