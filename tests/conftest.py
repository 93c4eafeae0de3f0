"""Shared fixtures. Tests that need Ray share one local Ray instance per test session."""

from __future__ import annotations

import os
import tempfile

import pytest

# No model or data set can come from a hub here, and none should be tried.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # One torch thread: tests run beside Ray workers on 2 cores, and oversubscribed OpenMP
    # threads spin-wait (a tiny backward pass went from 26 ms to 500 ms with two threads).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, shared by the session's tests and shut down at the end.

    `address="local"` always starts a fresh instance: a bare `ray.init()` would attach to any
    cluster another process started on this machine with `ray start`.
    """
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir, configure_logging=False)
    yield ray
    ray.shutdown()


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "movie", "film", "plot",
              "the", "is", "not", "very", "boring", "fun", ".", ",", "!", "and", "but", "great", "awful"]


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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_encoder("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_encoder(request, tmp_path_factory):
    """One tiny random encoder per architecture whose attribute names differ from BertModel's."""
    return make_tiny_encoder(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))


TINY_TEXTS = ["a good movie .", "the plot is boring and not fun", "great film !", "awful , awful movie",
              "not very good but fun", "the film is very very very boring .", "bad", "a great plot , a good film"]
