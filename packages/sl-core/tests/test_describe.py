"""sl describe: the per-layer table, totals, model loading and the accumulation plot."""

from __future__ import annotations

import json

import pytest
import torch

import sl
from sl import cli
from sl.describe import accumulation, describe, format_table, load_model


def build():
    return sl.Serial(
        sl.Dense(8, 16),
        sl.Parallel(sl.Identity(), sl.Delay(1, keep_mask=True), combination="concat"),
        sl.Lookahead(2, preserve_length_in_layer=True),
        sl.Downsample1D(2),
    )


def test_table_rows_and_totals():
    rows, totals = describe(build(), ((8,), torch.float32))
    assert [(r.depth, r.type) for r in rows] == [
        (0, "Serial"),
        (1, "Dense"),
        (1, "Parallel"),
        (2, "Identity"),
        (2, "Delay"),
        (1, "Lookahead"),
        (1, "Downsample1D"),
    ]
    serial, dense, parallel = rows[0], rows[1], rows[2]
    assert dense.output == "(16,) float32" and dense.parameters == 8 * 16 + 16
    assert parallel.output == "(32,) float32" and parallel.state_bytes == str(16 * 4)
    assert rows[5].latency == "0/2" and rows[6].block_size == "2" and rows[6].output_ratio == "1/2"
    assert totals["output"] == "(32,) float32" and totals["output_ratio"] == "1/2"
    assert totals["parameters"] == f"{8 * 16 + 16:,}" and totals["steppable"] == "yes"
    assert serial.receptive_field == totals["receptive_field"]
    text = format_table(rows, totals)
    assert "  1: Parallel" in text and "latency in/out" in text


class _Pipeline(sl.SequenceLayer):
    """A composite whose second part reads the first part's output (as STFT's framer -> fft)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = sl.Dense(3, 5)
        self.second = sl.Dense(5, 2)

    def get_output_shape(self, input_shape, *, constants=None):
        return (2,)

    def get_output_dtype(self, input_dtype, *, constants=None):
        return input_dtype

    def layer(self, x, *, training, constants=None):
        return self.second.layer(self.first.layer(x, training=training), training=training)


def test_a_composite_part_that_cannot_take_the_input_follows_the_previous_part():
    rows, _ = describe(_Pipeline(), ((3,), torch.float32))
    assert [(r.path, r.output) for r in rows] == [
        ("_Pipeline", "(2,) float32"),
        ("_Pipeline.first", "(5,) float32"),
        ("_Pipeline.second", "(2,) float32"),
    ]
    assert rows[2].state_bytes == "0"


def test_accumulation_follows_the_chain():
    data = accumulation(build())
    assert [d[0] for d in data] == ["Dense", "Parallel", "Lookahead", "Downsample1D"]
    assert [d[1] for d in data] == [0, 0, 2, 1]
    assert data[1][2:] == (-1.0, 0.0) and data[2][2:] == (1.0, 2.0)


def test_cli_describe(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_models.py").write_text(
        "import sl\n\ndef small():\n    return sl.Serial(sl.Dense(3, 2), sl.ReLU())\n"
    )
    assert cli.main(["describe", "my_models:small", "--input-shape", "3"]) == 0
    out = capsys.readouterr().out
    assert "0: Dense" in out and "parameters: 8" in out
    config = tmp_path / "model.json"
    config.write_text(json.dumps(sl.Serial(sl.Dense(3, 2)).get_config()))
    assert cli.main(["describe", str(config), "--input-shape", "3"]) == 0
    assert "Dense" in capsys.readouterr().out
    assert cli.main(["describe", "nowhere"]) == 2
    assert cli.main(["describe", "my_models:small", "--dtype", "float99"]) == 2


def test_plot(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "plot_models.py").write_text("from test_describe import build\n")
    png = tmp_path / "acc.png"
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    assert cli.main(["describe", "test_describe:build", "--input-shape", "8", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_model_errors():
    with pytest.raises(TypeError, match="not an sl layer"):
        load_model("torch.nn:Identity")
