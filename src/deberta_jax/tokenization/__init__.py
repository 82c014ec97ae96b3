"""Tokenizers: the DeBERTa-v3 sentencepiece tokenizer."""
