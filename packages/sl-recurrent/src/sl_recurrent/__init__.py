"""sl-recurrent: LSTM, GRU, RNN, RG-LRU (an sl plugin; depends on sl-core only)."""

__version__ = "0.1.0"
