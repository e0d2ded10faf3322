"""The examples run, learn, and stream exactly like they run offline."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import streaming_tagger

import sl


def test_streaming_tagger_trains_and_streams_exactly():
    torch.manual_seed(0)
    model = streaming_tagger.build_model()
    gen = torch.Generator().manual_seed(3)
    x, tags = streaming_tagger.make_batch(4, streaming_tagger.MAX_LEN, gen)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model.layer(x).values[x.mask], tags[x.mask])
    after = streaming_tagger.train(model, steps=40)
    assert after < float(before)
    with torch.no_grad():
        offline = model.layer(x)
    sl.testing.assert_sequences_close(offline, streaming_tagger.stream(model, x), rtol=1e-5, atol=1e-5)
    sl.testing.verify_contract(model, x, test_batching=False, rtol=1e-5, atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)
