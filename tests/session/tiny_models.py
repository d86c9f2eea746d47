"""Tiny randomly initialised transformers models built from a config (no download), shared by the tests."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 50


def tiny_gpt2():
    """A one-layer GPT-2-style causal LM over a vocabulary of :data:`VOCAB`, without dropout."""
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=1,
            n_head=2,
            n_embd=16,
            vocab_size=VOCAB,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )


def tiny_bert(num_labels: int = 3, **extra):
    """A one-layer BERT-style sequence classifier over a vocabulary of :data:`VOCAB`, without dropout."""
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            num_labels=num_labels,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **extra,
        )
    )
