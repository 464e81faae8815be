"""Text for any sequence model: token ids through a learned embedding, one vector per token."""

from __future__ import annotations

from torch import Tensor, nn

from dltrain.data.text import PADDING


class TokenEmbedding(nn.Module):
    """(batch, tokens) ids -> (batch, tokens, embedding_size) vectors -> `network` (an LSTM, a Transformer, an
    MLP, ... built for sequences of that shape). The padding id's vector is zero and stays so."""

    def __init__(self, num_tokens: int, embedding_size: int, network: nn.Module) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, embedding_size, padding_idx=PADDING)
        self.network = network

    def forward(self, ids: Tensor) -> Tensor:
        # long(): an example input of zeros (the model summary's, an export's) may come as floats
        return self.network(self.embedding(ids.long()))
