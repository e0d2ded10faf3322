"""Every steppable example model deploys (issue 13): its step compiles with
``torch.compile(fullgraph=True)`` (zero graph breaks) and gives the eager results, as does its
``sl.replay_step`` (every step captured, no fallback); its
``sl.export_step`` program over a 100-block stream equals eager ``step`` (float32, 1e-6);
and its ``sl.export_onnx`` graph runs in onnxruntime with the same agreement (1e-5), except
where the model says why it cannot (a complex spectrum inside).

The checks are the shared suite's (``sl.testing.suite``), which every registered layer
example already passes; here they run on whole models as the examples build them.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import building_blocks
import decoder
import gemma3n_audio_encoder
import speech_enhancement
import streaming_tagger

from sl.registry import LayerExample
from sl.testing import suite

COMPLEX = "complex tensors: ONNX has no complex dtype (the enhancer masks the complex STFT spectrum)"


def _models() -> list[LayerExample]:
    torch.manual_seed(0)
    return [
        LayerExample(
            building_blocks.transformer_block(d_model=16, num_heads=2, d_ff=32, past=5, future=2),
            (16,),
            name="transformer block (P=5, F=2)",
        ),
        LayerExample(
            building_blocks.lstm_classifier(vocab=20, dim=8, hidden=12, classes=5),
            (),
            dtype=torch.int64,
            int_high=20,
            name="Embedding -> LSTM -> Dense -> Softmax",
        ),
        LayerExample(building_blocks.conv_stack(in_ch=6, channels=8, layers=3), (6,), name="conv stack (causal)"),
        LayerExample(
            building_blocks.conv_stack(in_ch=6, channels=8, layers=2, padding="reverse_causal"),
            (6,),
            name="conv stack (reverse_causal, latency 4)",
        ),
        LayerExample(
            gemma3n_audio_encoder.build(mel_bins=8, model_dims=16, num_layers=2, num_heads=2),
            (8,),
            time=32,
            name="Gemma 3n-style encoder",
        ),
        LayerExample(
            speech_enhancement.build_model(channels=8, hidden=8),
            (),
            time=2 * speech_enhancement.HOP,
            name="speech enhancer",
            onnx=COMPLEX,
        ),
        LayerExample(decoder.build_model(layers=1, max_len=128), (), dtype=torch.int64, int_high=16, name="decoder"),
        LayerExample(streaming_tagger.build_model(), (), dtype=torch.int64, int_high=32, name="streaming tagger"),
    ]


MODELS = [pytest.param(example, id=example.label) for example in _models()]


def test_every_example_model_is_steppable():
    for param in MODELS:
        assert param.values[0].layer.supports_step, param.id


@pytest.mark.parametrize("example", MODELS)
def test_step_compiles_fullgraph(example):
    suite.check_step_compiles(example)


@pytest.mark.parametrize("example", MODELS)
def test_step_exports_and_streams_100_blocks(example):
    suite.check_step_exports(example, steps=100)


@pytest.mark.parametrize("example", MODELS)
def test_step_runs_in_onnxruntime(example, tmp_path):
    pytest.importorskip("onnxscript")
    suite.check_step_onnx(example, tmp_path)


@pytest.mark.parametrize("example", MODELS)
def test_step_replays(example):
    suite.check_step_replays(example)
