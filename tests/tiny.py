"""Tiny hand-made encoders and sentences for tests: no download, seconds to build.

A module of its own (not conftest.py): several test folders have a conftest, and
`from conftest import ...` would find whichever was imported first.
"""

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "movie", "film", "plot",
              "the", "is", "not", "very", "boring", "fun", ".", ",", "!", "and", "but", "great", "awful"]


TINY_TEXTS = ["a good movie .", "the plot is boring and not fun", "great film !", "awful , awful movie",
              "not very good but fun", "the film is very very very boring .", "bad", "a great plot , a good film"]


def make_tiny_encoder(arch: str, path) -> str:
    """Save a randomly initialised 3-layer encoder of `arch` with a WordPiece tokenizer to `path`.

    Dropout is on (0.1) so that the tests prove the frozen part runs in eval mode. No download:
    the model is built from its config, the tokenizer from a hand-written vocabulary.
    """
    import torch
    from transformers import (BertConfig, BertModel, BertTokenizerFast, DistilBertConfig, DistilBertModel,
                              MPNetConfig, MPNetModel, RobertaConfig, RobertaModel)

    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    common = dict(vocab_size=len(TINY_VOCAB), pad_token_id=0)
    # RoBERTa and MPNet offset positions by the padding index, so they need a few spare positions.
    configs = {
        "bert": (BertModel, BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                                       max_position_embeddings=64, hidden_dropout_prob=0.1,
                                       attention_probs_dropout_prob=0.1, **common)),
        "roberta": (RobertaModel, RobertaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                intermediate_size=32, max_position_embeddings=70,
                                                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **common)),
        "distilbert": (DistilBertModel, DistilBertConfig(dim=16, n_layers=3, n_heads=2, hidden_dim=32,
                                                         max_position_embeddings=64, dropout=0.1,
                                                         attention_dropout=0.1, **common)),
        "mpnet": (MPNetModel, MPNetConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=70, hidden_dropout_prob=0.1,
                                          attention_probs_dropout_prob=0.1, **common)),
    }
    model_cls, config = configs[arch]
    torch.manual_seed(0)
    model_cls(config).save_pretrained(path)
    return str(path)


ARCHITECTURES = ("bert", "roberta", "distilbert", "mpnet")


def cached_and_full_gradients(cached, full, encoder_path, cache_dir) -> dict:
    """Run one batch of TINY_TEXTS through `cached` (a Classifier on cached activations) and
    `full` (a FullEncoderClassifier with an identical classifier), backward a loss through both,
    assert the logits and every trainable parameter's gradient agree; return the gradients."""
    import numpy as np
    import torch

    from raysweep.embed import ensure_activations, load_activations

    [path] = ensure_activations(encoder_path, TINY_TEXTS, [cached.boundary], cache_dir, use_ray=False,
                                batch_size=3, log=lambda *_: None)
    acts = load_activations(path)
    rows = np.array([5, 0, 3, 7])
    labels = torch.tensor([0, 1, 4, 2])

    torch.manual_seed(123)
    x, mask = acts.batch(rows)
    logits_cached = cached(x, mask)
    torch.nn.functional.cross_entropy(logits_cached, labels).backward()

    torch.manual_seed(123)  # the top layers' and head's dropout draw the same masks in both paths
    logits_full = full([TINY_TEXTS[i] for i in rows])
    torch.nn.functional.cross_entropy(logits_full, labels).backward()

    torch.testing.assert_close(logits_cached, logits_full, rtol=1e-5, atol=1e-6)
    grads_cached = {n: p.grad for n, p in cached.named_parameters() if p.requires_grad}
    grads_full = {n: p.grad for n, p in full.classifier.named_parameters() if p.requires_grad}
    assert grads_cached.keys() == grads_full.keys() and grads_cached
    for name in grads_cached:
        assert grads_cached[name] is not None, name
        torch.testing.assert_close(grads_cached[name], grads_full[name], rtol=1e-4, atol=1e-6, msg=name)
    return grads_cached


def run_trial(cell, inputs, recipe, selection=None) -> dict:
    """One trial alone (a pack of one): its metrics, or its error raised."""
    from raysweep.train import run_trials

    [result] = run_trials([cell], inputs, recipe, selection)
    if isinstance(result, BaseException):
        raise result
    return result[0]
