"""sl-attention: attention and relative position layers (an sl plugin; depends on sl-core only)."""

__version__ = "0.1.0"
