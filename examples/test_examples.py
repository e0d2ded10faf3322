"""The examples run, learn, and stream exactly like they run offline (the combos session)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import building_blocks
import decoder
import speech_enhancement
import streaming_tagger

import sl
from sl.testing import assert_sequences_close, random_sequence, verify_contract


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
    assert_sequences_close(offline, streaming_tagger.stream(model, x), rtol=1e-5, atol=1e-5)
    verify_contract(model, x, test_batching=False, rtol=1e-5, atol=1e-5, grad_rtol=1e-4, grad_atol=1e-5)


# -- written as users write them ---------------------------------------------------------------


def test_pre_norm_transformer_block_with_lookahead():
    model = building_blocks.transformer_block(d_model=16, num_heads=2, d_ff=32, past=5, future=2)
    assert model.input_latency == model.output_latency == 2
    verify_contract(model, random_sequence(2, 11, 16, random_mask=True), rtol=1e-4, atol=1e-4)


def test_lstm_classifier_on_token_ids():
    model = building_blocks.lstm_classifier(vocab=20, dim=8, hidden=12, classes=5)
    ids = random_sequence(3, 9, dtype=torch.int64, high=20)
    y = verify_contract(model, ids, test_batching=False, rtol=1e-5, atol=1e-5)  # garbage ids are errors
    assert y.channel_shape == (5,)
    torch.testing.assert_close(y.values.sum(-1)[y.mask], torch.ones(int(y.mask.sum())))


def test_conv_stack_streams_causally_and_same_padding_says_why_not():
    causal = building_blocks.conv_stack(in_ch=6, channels=8, layers=3)
    verify_contract(causal, random_sequence(2, 10, 6, random_mask=True), rtol=1e-4, atol=1e-4)
    lookahead = building_blocks.conv_stack(in_ch=6, channels=8, layers=2, padding="reverse_causal")
    assert lookahead.output_latency == 4
    verify_contract(lookahead, random_sequence(2, 10, 6, random_mask=True), rtol=1e-4, atol=1e-4)
    same = building_blocks.conv_stack(in_ch=6, channels=8, layers=2, padding="same")
    x = random_sequence(2, 10, 6)
    assert same.layer(x).channel_shape == (8,)
    with pytest.raises(ValueError, match="does not support step"):
        sl.step_by_step(same, x)


# -- speech enhancement -------------------------------------------------------------------------


def test_speech_enhancement_contract_on_a_small_config():
    model = speech_enhancement.build_model(channels=4, hidden=4, frame=16, hop=8)
    assert model.block_size == 8 and model.output_ratio == 1 and model.output_latency == 8
    x = random_sequence(2, 64, random_mask=False)
    verify_contract(
        model,
        x,
        rtol=1e-4,
        atol=1e-5,
        grad_rtol=1e-3,
        grad_atol=1e-4,
        test_output_length=False,
        receptive_field_relaxed=True,
    )


def test_speech_enhancement_learns_and_streams_every_sample():
    torch.manual_seed(0)
    model = speech_enhancement.build_model(channels=16, hidden=16)
    losses = speech_enhancement.train(model, steps=8, seconds=0.5)
    assert losses[-1] < losses[0]
    noisy, _ = speech_enhancement.synthesize(2, 0.7, torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline = model.layer(sl.Sequence.from_values(noisy))
    live = speech_enhancement.stream(model, noisy)
    n = offline.values.shape[1]
    assert live.values.shape[1] >= n and bool(live.mask[:, :n].all())  # every layer-mode sample comes out
    assert_sequences_close(offline, live[:, :n], rtol=1e-4, atol=1e-5)
    # Any block size that is a multiple of the hop streams the same samples.
    live_40ms = speech_enhancement.stream(model, noisy, block=4 * speech_enhancement.HOP)
    assert_sequences_close(offline, live_40ms[:, :n], rtol=1e-4, atol=1e-5)


# -- autoregressive decoding --------------------------------------------------------------------


def test_decoder_samples_token_by_token_like_teacher_forcing():
    torch.manual_seed(0)
    model = decoder.build_model(layers=1, max_len=24)
    decoder.train(model, steps=10)
    prompt = decoder.make_batch(2, 4, torch.Generator().manual_seed(2))
    tokens, step_logits = decoder.sample(model, prompt, new_tokens=12, temperature=1.0)
    with torch.no_grad():
        forced = model.layer(sl.Sequence.from_values(tokens[:, :-1])).values
    torch.testing.assert_close(step_logits, forced, rtol=1e-4, atol=1e-4)
    assert torch.equal(tokens[:, :4], prompt)


def test_decoder_cache_overflow_is_an_error():
    model = decoder.build_model(layers=1, max_len=6).eval()
    with pytest.raises(ValueError, match="K/V cache is full"):
        decoder.sample(model, decoder.make_batch(1, 3, torch.Generator().manual_seed(0)), new_tokens=8)


def test_decoder_contract():
    model = decoder.build_model(layers=1, max_len=64)
    ids = random_sequence(2, 12, dtype=torch.int64, high=decoder.VOCAB)
    verify_contract(model, ids, test_batching=False, rtol=1e-4, atol=1e-4)


def test_ddp_two_processes_equal_one_process(tmp_path):
    import socket

    import ddp_training

    with socket.socket() as s:  # a free port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    single = ddp_training.train_single()
    distributed = ddp_training.train_ddp(world=2, port=port, out_path=str(tmp_path / "ddp.pt"))
    assert single.keys() == distributed.keys()
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(v, ddp_training.build().state_dict()[k]) for k, v in single.items())  # it trained


def test_demo_runs_end_to_end(tmp_path, capsys):
    import demo

    figure = tmp_path / "demo.png"
    assert demo.main(["--train-steps", "2", "--seconds", "0.5", "--output", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "max |layer - step|" in out and "algorithmic latency: 19.9 ms" in out and "SNR" in out
    if "figure:" in out:
        assert figure.read_bytes()[:4] == b"\x89PNG"
