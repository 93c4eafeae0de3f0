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
