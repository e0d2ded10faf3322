"""An autoregressive transformer decoder: trained with teacher forcing, sampled token by token.

Causal self-attention with an unbounded past (``max_past_horizon=-1``) streams with a
preallocated K/V cache of ``max_cache_length`` steps (beyond the reference, whose
unbounded attention cannot step), so ``step()`` decodes one token per call with fixed-shape
state; exceeding the cache raises instead of silently forgetting context. The logits
``step()`` produces while sampling equal what ``layer()`` gives the finished sequence
(teacher forcing), position by position.

    python examples/decoder.py
"""

from __future__ import annotations

import torch

import sl

VOCAB, D_MODEL, HEADS, MAX_LEN = 16, 64, 4, 48
BOS = 0


def build_model(layers: int = 2, max_len: int = MAX_LEN) -> sl.SequenceLayer:
    blocks: list[sl.SequenceLayer] = [sl.Embedding(VOCAB, D_MODEL), sl.AddTimingSignal()]
    for _ in range(layers):
        attention = sl.Serial(
            sl.LayerNorm(D_MODEL),
            sl.attention.DotProductSelfAttention(
                input_size=D_MODEL,
                num_heads=HEADS,
                units_per_head=D_MODEL // HEADS,
                max_past_horizon=-1,  # everything before, from a K/V cache
                max_cache_length=max_len,
            ),
            sl.DenseShaped((HEADS, D_MODEL // HEADS), D_MODEL),
        )
        feed_forward = sl.Serial(
            sl.LayerNorm(D_MODEL), sl.Dense(D_MODEL, 4 * D_MODEL, activation="gelu"), sl.Dense(4 * D_MODEL, D_MODEL)
        )
        blocks += [sl.Residual(attention), sl.Residual(feed_forward)]
    blocks += [sl.LayerNorm(D_MODEL), sl.Dense(D_MODEL, VOCAB)]
    return sl.Serial(*blocks)


def make_batch(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Sequences ``BOS a b c a b c ...``: a random 3-token motif repeated (learnable in context)."""
    motif = torch.randint(1, VOCAB, (batch, 3), generator=generator)
    body = motif.repeat(1, length // 3 + 1)[:, : length - 1]
    return torch.cat([torch.full((batch, 1), BOS), body], 1)


def train(model: sl.SequenceLayer, steps: int = 300, seed: int = 0) -> float:
    """Teacher forcing: predict token t+1 from tokens <= t, layer-wise."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        tokens = make_batch(16, 24, gen)
        logits = model(sl.Sequence.from_values(tokens[:, :-1])).values
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


@torch.inference_mode()
def sample(
    model: sl.SequenceLayer, prompt: torch.Tensor, new_tokens: int, temperature: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decodes ``new_tokens`` after ``prompt`` ``[batch, prompt_len]`` one ``step()`` at a time.

    Returns the tokens ``[batch, prompt_len + new_tokens]`` and the logits every step produced
    ``[batch, prompt_len + new_tokens - 1, vocab]``. ``temperature=0`` is greedy.
    """
    gen = torch.Generator().manual_seed(seed)
    batch = prompt.shape[0]
    state = model.get_initial_state(batch, sl.ChannelSpec((), torch.int64))
    tokens = [prompt[:, i] for i in range(prompt.shape[1])]
    logits_seen = []
    for i in range(prompt.shape[1] + new_tokens - 1):
        x = sl.Sequence.from_values(tokens[i][:, None])
        y, state = model.step(x, state)
        logits = y.values[:, 0]
        logits_seen.append(logits)
        if i + 1 >= len(tokens):
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                tokens.append(torch.multinomial(probs, 1, generator=gen)[:, 0])
            else:
                tokens.append(logits.argmax(-1))
    return torch.stack(tokens, 1), torch.stack(logits_seen, 1)


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    loss = train(model)
    prompt = make_batch(4, 7, torch.Generator().manual_seed(5))
    tokens, step_logits = sample(model, prompt, new_tokens=30)
    with torch.no_grad():
        forced = model.layer(sl.Sequence.from_values(tokens[:, :-1])).values
    torch.testing.assert_close(step_logits, forced, rtol=1e-4, atol=1e-4)
    target = prompt[:, 1:4].repeat(1, 20)[:, : tokens.shape[1] - 7]
    accuracy = float((tokens[:, 7:] == target[:, : tokens.shape[1] - 7]).float().mean())
    print(f"loss {loss:.3f}; continues the motif with accuracy {accuracy:.2f}; step logits == teacher forcing")


if __name__ == "__main__":
    main()
