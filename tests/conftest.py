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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 3-layer BERT with its tokenizer, saved to disk: no download.

    Dropout is on (0.1) so that the tests prove the frozen part runs in eval mode.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    BertModel(config).save_pretrained(path)
    return str(path)


TINY_TEXTS = ["a good movie .", "the plot is boring and not fun", "great film !", "awful , awful movie",
              "not very good but fun", "the film is very very very boring .", "bad", "a great plot , a good film"]
