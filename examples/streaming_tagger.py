"""A streaming token tagger built from sl-core layers, trained briefly, then run live.

The model sees each token once and keeps explicit state between calls (a causal tap,
``sl.Delay(1, keep_mask=True)``, carries the previous token beside the current one), so
a live stream's outputs equal the whole-sequence outputs exactly, for sequences of any
length and the ragged lengths of a padded batch.

    python examples/streaming_tagger.py
"""

from __future__ import annotations

import torch

import sl

VOCAB, WIDTH, TAGS, MAX_LEN = 32, 48, 4, 24


def build_model() -> sl.SequenceLayer:
    return sl.Serial(
        sl.Embedding(num_embeddings=VOCAB, dimension=WIDTH),
        # The current token beside the previous one (zeros before the first).
        sl.Parallel(sl.Identity(), sl.Delay(1, keep_mask=True), combination="concat"),
        sl.Dense(2 * WIDTH, WIDTH, activation="gelu"),
        sl.Dense(WIDTH, TAGS),
    )


def make_batch(batch: int, length: int, generator: torch.Generator) -> tuple[sl.Sequence, torch.Tensor]:
    """Tag = class of the previous token (its id mod TAGS): needs one token of memory."""
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    previous = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], 1)
    tags = previous % TAGS
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    x = sl.Sequence.from_lengths(ids, lengths)
    return x, tags


def train(model: sl.SequenceLayer, steps: int = 200, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x, tags = make_batch(16, MAX_LEN, gen)
        logits = model(x)
        valid = logits.mask
        loss = torch.nn.functional.cross_entropy(logits.values[valid], tags[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def stream(model: sl.SequenceLayer, x: sl.Sequence) -> sl.Sequence:
    """Feeds one token per call to a live stream; the outputs line up with ``layer`` (sl.Streamer
    handles the latency and runs without autograd)."""
    streamer = sl.Streamer(model, x.shape[0], x.channel_spec)
    outputs = [streamer.push(x[:, t : t + 1]) for t in range(x.shape[1])]
    outputs.append(streamer.flush())
    return sl.Sequence.concatenate_sequences(outputs)


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    print(f"block_size={model.block_size} latency={model.input_latency}/{model.output_latency}")
    print(f"receptive_field={model.receptive_field}")
    loss = train(model)
    x, tags = make_batch(4, MAX_LEN, torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline = model.layer(x)
    live = stream(model, x)
    sl.testing.assert_sequences_close(offline, live, rtol=1e-5, atol=1e-5)
    accuracy = (offline.values.argmax(-1) == tags)[offline.mask].float().mean()
    print(f"final training loss {loss:.3f}; tag accuracy {accuracy:.2f}; live stream == offline")


if __name__ == "__main__":
    main()
