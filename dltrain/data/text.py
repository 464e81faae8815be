"""A text column as token ids: scikit-learn's tokenizer, a vocabulary built on the training split, kept for
prediction (in the checkpoint's data spec, and in an export's preprocessing.json)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer

from dltrain.errors import DataError

PADDING, UNKNOWN = 0, 1  # the ids before the vocabulary's: a text shorter than max_length is padded with 0 in front,
# so that a sequence model's last step (what a recurrent model predicts from) is the text's last token
WORD_PATTERN = r"(?u)\b\w+\b"  # every word, one letter long too (scikit-learn's default drops those)
ANALYZERS = ("word", "char")


def tokenize(texts: pd.Series, analyzer: str) -> list[list[str]]:
    """Each text's tokens by scikit-learn's analyzer: lower-cased words, or characters (an empty text: none)."""
    split = CountVectorizer(analyzer=analyzer, token_pattern=WORD_PATTERN if analyzer == "word" else None,
                            lowercase=True).build_analyzer()
    return [split(text) for text in texts.fillna("").astype(str)]


class TextEncoder:
    """Texts to (rows, max_length) token ids: each token's place in the vocabulary plus 2 (1 is a token the
    training split did not have or kept), cut after max_length tokens, padded with 0 in front."""

    def __init__(self, column: str, analyzer: str, max_length: int, vocabulary: list[str],
                 embedding_size: int) -> None:
        self.column, self.analyzer, self.max_length = column, analyzer, max_length
        self.vocabulary, self.embedding_size = vocabulary, embedding_size
        self._ids = {token: number + 2 for number, token in enumerate(vocabulary)}

    @classmethod
    def fit(cls, tokens: list[list[str]], *, column: str, analyzer: str, max_length: int, min_count: int,
            max_vocabulary: int, embedding_size: int) -> TextEncoder:
        """The vocabulary of the training split's tokenized texts: tokens in at least `min_count` of them, the
        most frequent `max_vocabulary` (scikit-learn's CountVectorizer, counting the tokens given)."""
        vectorizer = CountVectorizer(analyzer=lambda text_tokens: text_tokens, min_df=min_count,
                                     max_features=max_vocabulary)
        try:
            vectorizer.fit(tokens)
        except ValueError as exc:  # no token at all, or none in min_count texts
            raise DataError(f"data.text_column={column}: no vocabulary from the training split ({exc}); lower "
                            "data.min_count or check the column") from None
        return cls(column, analyzer, max_length, sorted(vectorizer.vocabulary_), embedding_size)

    @property
    def num_tokens(self) -> int:
        """The embedding's rows: the vocabulary and the padding and unknown ids."""
        return len(self.vocabulary) + 2

    def transform(self, texts: pd.Series) -> np.ndarray:
        """New texts as ids, tokenized as training's were."""
        return self.ids(tokenize(texts, self.analyzer))

    def ids(self, tokens: list[list[str]]) -> np.ndarray:
        ids = np.full((len(tokens), self.max_length), PADDING, dtype=np.int64)
        for row, text_tokens in enumerate(tokens):
            kept = [self._ids.get(token, UNKNOWN) for token in text_tokens[:self.max_length]]
            if kept:
                ids[row, -len(kept):] = kept
        return ids

    def describe(self, tokens: list[list[str]]) -> list[str]:
        """What fitting found, for the log: the vocabulary and how much of the training texts it covers."""
        lengths = [len(text_tokens) for text_tokens in tokens]
        cut = sum(length > self.max_length for length in lengths)
        return [f"text column '{self.column}': {len(self.vocabulary)} {self.analyzer} tokens in the vocabulary "
                f"(from the training split), texts of up to {max(lengths, default=0)} tokens, {cut} cut to "
                f"data.max_length={self.max_length}"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "text", "column": self.column, "analyzer": self.analyzer, "max_length": self.max_length,
                "vocabulary": list(self.vocabulary), "embedding_size": self.embedding_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextEncoder:
        """The encoder a data spec stores; ValueError for one whose fields have other types than training writes
        (a checkpoint is data: dltrain.data.spec_check.checked_spec refuses it)."""
        fields = ("column", "analyzer", "max_length", "vocabulary", "embedding_size")
        sizes = [data.get("max_length"), data.get("embedding_size")]
        if (not all(field in data for field in fields) or data["analyzer"] not in ANALYZERS
                or not isinstance(data["column"], str) or not isinstance(data["vocabulary"], list)
                or not all(isinstance(token, str) for token in data["vocabulary"])
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes)):
            raise ValueError(f"expected {', '.join(fields)}: a string, word or char, a positive integer, a list of "
                             "strings, a positive integer")
        return cls(data["column"], data["analyzer"], data["max_length"], data["vocabulary"], data["embedding_size"])
