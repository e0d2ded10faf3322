"""A streaming token tagger built from sl-core layers, trained briefly, then run live.

The model sees each token once and keeps explicit state between calls (a causal,
time-varying ``MaskedDense`` carries the past), so a live stream's outputs equal the
whole-sequence outputs exactly, including the ragged lengths of a padded batch.

    python examples/streaming_tagger.py
"""

from __future__ import annotations

import torch

import sl

VOCAB, WIDTH, TAGS, MAX_LEN = 32, 48, 4, 24


def build_model() -> sl.SequenceLayer:
    return sl.Serial(
        sl.Embedding(num_embeddings=VOCAB, dimension=WIDTH),
        sl.AddTimingSignal(),
        # Each step sees every earlier token through its own causal weights.
        sl.Residual(sl.MaskedDense(WIDTH, WIDTH, num_steps=MAX_LEN, activation="gelu")),
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


@torch.no_grad()
def stream(model: sl.SequenceLayer, x: sl.Sequence) -> sl.Sequence:
    """Feeds one token per call (flushing any latency); returns outputs aligned with ``layer``."""
    state = model.get_initial_state(x.shape[0], x.channel_spec)
    x = x.pad_time(0, model.input_latency, valid=False)
    outputs = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t : t + 1], state)
        outputs.append(y)
    return sl.Sequence.concatenate_sequences(outputs)[:, model.output_latency :]


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
