"""sl-conv's example layers for the conformance kit (``sl_example_layers``).

Every registered layer appears at least once, in small configurations that exercise
its options (padding modes, stride, dilation, groups, weight normalisation, axes);
the shared suite (``tests/test_examples.py``, ``python -m sl check conv``) runs
``verify_contract`` (float32 with declared and random masks, bfloat16), the config
round trip, and compiled/exported steps on each. Biases and normalisation parameters
are randomised so that zeros cannot hide a bug. Names are unique (they label test ids).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from sl.registry import LayerExample
from sl_conv import convolution as C
from sl_conv import normalization as N
from sl_conv import pooling as Pl

__all__ = ["example_layers"]

L = TypeVar("L", bound=torch.nn.Module)

# Layers whose layer-wise length is not T / stride by design (valid: shorter; semicausal_full: longer).
_LENGTH = {"test_output_length": False}


def _randomized(layer: L, seed: int = 0) -> L:
    """Random biases, scales and running statistics (the kernels are random already)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() <= 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen).to(p.dtype))
        for name, b in layer.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return layer


def _ex(layer: Any, input_shape: tuple[int, ...], name: str, **kw: Any) -> LayerExample:
    return LayerExample(_randomized(layer), input_shape, name=name, **kw)


def _convolutions() -> list[LayerExample]:
    return [
        _ex(C.Conv1D(3, 4, 3, padding="causal"), (3,), "Conv1D(k3, causal)"),
        _ex(C.Conv1D(3, 4, 3, padding="same", activation="relu"), (3,), "Conv1D(k3, same, relu)", random_mask=True),
        _ex(C.Conv1D(3, 4, 3, dilation=2), (3,), "Conv1D(k3, d2, valid)", contract=_LENGTH),
        _ex(C.Conv1D(2, 3, 2, stride=2, padding="causal_valid"), (2,), "Conv1D(k2, s2, causal_valid)"),
        _ex(
            C.Conv1D(4, 6, 3, stride=2, padding="reverse_causal", groups=2),
            (4,),
            "Conv1D(k3, s2, reverse_causal, groups 2)",
        ),
        _ex(C.Conv1D(3, 2, 3, stride=2, padding="reverse_causal_valid"), (3,), "Conv1D(k3, s2, reverse_causal_valid)"),
        _ex(
            C.Conv1D(3, 2, 3, stride=2, padding="semicausal", dilation=2),
            (3,),
            "Conv1D(k3, s2, d2, semicausal)",
            random_mask=True,
        ),
        _ex(C.Conv1D(3, 2, 2, stride=3, padding="semicausal"), (3,), "Conv1D(k2, s3, semicausal)"),
        _ex(
            C.Conv1D(3, 2, 4, stride=2, padding="semicausal_full"),
            (3,),
            "Conv1D(k4, s2, semicausal_full)",
            contract=_LENGTH,
        ),
        _ex(C.Conv1D(3, 4, 1, bias=False), (3,), "Conv1D(k1, no bias)", random_mask=True),
        _ex(C.Conv1D(3, 4, 3, padding="causal", use_weight_norm=True), (3,), "Conv1D(weight norm)"),
        _ex(
            C.Conv1D(3, 4, 3, padding="causal", kernel_constraint={"kind": "spectral", "n_power_iteration": 2}),
            (3,),
            "Conv1D(spectral norm)",
        ),
        _ex(
            C.DepthwiseConv1D(4, 3, padding="causal", depth_multiplier=2),
            (4,),
            "DepthwiseConv1D(k3, causal, x2)",
            random_mask=True,
        ),
        _ex(
            C.DepthwiseConv1D(3, 2, stride=2, padding="reverse_causal", dilation=2),
            (3,),
            "DepthwiseConv1D(k2, s2, d2, reverse_causal)",
        ),
        _ex(
            C.Conv2D(2, 3, 3, stride=(2, 1), time_padding="causal"),
            (5, 2),
            "Conv2D(k3, s(2,1), causal, same)",
        ),
        _ex(
            C.Conv2D(2, 4, (2, 3), time_padding="reverse_causal", spatial_padding=(1, 0), dilation=(1, 2), groups=2),
            (6, 2),
            "Conv2D(k(2,3), reverse_causal, explicit spatial, groups 2)",
            random_mask=True,
        ),
        _ex(
            C.DepthwiseConv2D(2, (3, 2), time_padding="semicausal", spatial_padding="valid", depth_multiplier=2),
            (4, 2),
            "DepthwiseConv2D(k(3,2), semicausal, valid, x2)",
        ),
        _ex(
            C.Conv3D(2, 3, (2, 3, 1), time_padding="causal", spatial_padding=("same", "valid")),
            (3, 2, 2),
            "Conv3D(k(2,3,1), causal)",
        ),
        _ex(C.Conv1DTranspose(3, 4, 4, stride=2, padding="causal"), (3,), "Conv1DTranspose(k4, s2, causal)"),
        _ex(
            C.Conv1DTranspose(4, 2, 3, stride=2, padding="causal", groups=2, dilation=2),
            (4,),
            "Conv1DTranspose(k3, s2, d2, causal, groups 2)",
            random_mask=True,
        ),
        _ex(C.Conv1DTranspose(3, 2, 1, stride=3, padding="causal"), (3,), "Conv1DTranspose(k1, s3, causal)"),
        _ex(C.Conv1DTranspose(3, 4, 2, stride=2), (3,), "Conv1DTranspose(k2, s2, valid)"),
        # The reference's 'valid' mask ANDs the inputs reaching each output, so appending invalid
        # steps invalidates the last max(k - stride, 0) outputs of a full-length row: its layer
        # mode is not end-padding invariant there (checked against sequence-layers 0.2).
        _ex(
            C.Conv1DTranspose(3, 4, 3, stride=2),
            (3,),
            "Conv1DTranspose(k3, s2, valid)",
            contract={**_LENGTH, "test_padding_invariance": False},
        ),
        _ex(C.Conv1DTranspose(3, 4, 3, stride=1, padding="same"), (3,), "Conv1DTranspose(k3, same)"),
        _ex(
            C.Conv1DTranspose(3, 2, 4, stride=2, padding="semicausal_full"),
            (3,),
            "Conv1DTranspose(k4, s2, semicausal_full)",
            contract=_LENGTH,
        ),
        _ex(
            C.Conv2DTranspose(2, 3, (3, 2), stride=2, time_padding="causal"),
            (3, 2),
            "Conv2DTranspose(k(3,2), s2, causal, same)",
        ),
        _ex(
            C.Conv3DTranspose(2, 2, 2, stride=(2, 1, 2), time_padding="causal", spatial_padding=("valid", "same")),
            (2, 2, 2),
            "Conv3DTranspose(k2, s(2,1,2), causal)",
        ),
    ]


def _pooling() -> list[LayerExample]:
    return [
        _ex(Pl.MaxPooling1D(3, padding="causal"), (3,), "MaxPooling1D(3, causal)", random_mask=True),
        _ex(
            Pl.MaxPooling1D(2, stride=2, padding="reverse_causal_valid"),
            (3,),
            "MaxPooling1D(2, s2, reverse_causal_valid)",
        ),
        _ex(Pl.MaxPooling1D(3, padding="same"), (2, 2), "MaxPooling1D(3, same, rank 2)"),
        _ex(
            Pl.MinPooling1D(3, stride=2, padding="semicausal", dilation=2), (3,), "MinPooling1D(3, s2, d2, semicausal)"
        ),
        _ex(Pl.MinPooling1D(2, padding="causal_valid"), (3,), "MinPooling1D(2, causal_valid)"),
        _ex(
            Pl.AveragePooling1D(3, padding="causal", masked_average=True),
            (3,),
            "AveragePooling1D(3, causal, masked)",
            random_mask=True,
        ),
        _ex(
            Pl.AveragePooling1D(2, stride=2, padding="reverse_causal"), (3,), "AveragePooling1D(2, s2, reverse_causal)"
        ),
        _ex(Pl.AveragePooling1D(3, dilation=2), (3,), "AveragePooling1D(3, d2, valid)", contract=_LENGTH),
        _ex(
            Pl.AveragePooling1D(4, stride=2, padding="semicausal_full", masked_average=True),
            (3,),
            "AveragePooling1D(4, s2, semicausal_full, masked)",
            contract=_LENGTH,
        ),
        _ex(Pl.MaxPooling2D((2, 3), time_padding="causal"), (4, 2), "MaxPooling2D((2,3), causal, same)"),
        _ex(
            Pl.MinPooling2D(2, stride=(1, 2), time_padding="reverse_causal", spatial_padding="valid"),
            (4, 2),
            "MinPooling2D(2, s(1,2), reverse_causal, valid)",
        ),
        _ex(
            Pl.AveragePooling2D(
                (3, 2), stride=(2, 1), time_padding="semicausal", spatial_padding=(1, 0), masked_average=True
            ),
            (3, 2),
            "AveragePooling2D((3,2), s(2,1), semicausal, explicit, masked)",
            random_mask=True,
        ),
        _ex(Pl.MaxPooling3D(2, time_padding="causal"), (3, 3, 2), "MaxPooling3D(2, causal)"),
        _ex(
            Pl.MinPooling3D((2, 1, 2), time_padding="reverse_causal"),
            (2, 3, 2),
            "MinPooling3D((2,1,2), reverse_causal)",
        ),
        _ex(
            Pl.AveragePooling3D((2, 2, 1), stride=(2, 1, 1), time_padding="causal", masked_average=True),
            (2, 2, 2),
            "AveragePooling3D((2,2,1), s(2,1,1), causal, masked)",
        ),
    ]


def _normalization() -> list[LayerExample]:
    return [
        _ex(N.L2Normalize(), (4,), "L2Normalize", random_mask=True),
        _ex(N.L2Normalize(axis=(-2, -1)), (2, 3), "L2Normalize(2 axes)"),
        _ex(N.LayerNormalization(4), (4,), "LayerNormalization(4)", random_mask=True),
        _ex(N.LayerNormalization((2, 3), axis=(2, 3)), (2, 3), "LayerNormalization(2 axes)"),
        _ex(N.LayerNormalization(3, axis=2, bias=False), (3, 2), "LayerNormalization(axis 2, no bias)"),
        _ex(N.RMSNormalization(4), (4,), "RMSNormalization(4)", random_mask=True),
        _ex(N.RMSNormalization(3, axis=-2, elementwise_affine=False), (3, 2), "RMSNormalization(axis -2, no scale)"),
        _ex(N.BatchNormalization(4), (4,), "BatchNormalization(4, eval)", random_mask=True),
        _ex(N.BatchNormalization(3, axis=2, affine=False), (3, 2), "BatchNormalization(axis 2, no affine, eval)"),
        _ex(
            N.GroupNormalization(2, 4, cumulative=True), (4,), "GroupNormalization(2, 4, cumulative)", random_mask=True
        ),
        _ex(
            N.GroupNormalization(3, 6, axis=2, cumulative=True), (6, 2), "GroupNormalization(3, 6, axis 2, cumulative)"
        ),
        _ex(N.GroupNormalization(2, 4), (4,), "GroupNormalization(2, 4)", random_mask=True),
    ]


def _lazy() -> list[LayerExample]:
    """Input sizes omitted (``sl.lazy``): the shared suite's first call builds each layer (so its
    biases and scales keep their initial values: nothing to randomise before that call)."""
    return [
        LayerExample(
            C.DepthwiseConv1D(kernel_size=3, stride=2, padding="causal", depth_multiplier=2, use_weight_norm=True),
            (3,),
            name="DepthwiseConv1D(lazy, k3, s2, causal, x2, weight norm)",
            random_mask=True,
        ),
        LayerExample(
            C.Conv2D(out_channels=4, kernel_size=(3, 2), stride=(2, 1), time_padding="causal", groups=2),
            (3, 4),
            name="Conv2D(lazy, k(3,2), s(2,1), causal, groups 2)",
        ),
        LayerExample(
            C.Conv1DTranspose(out_channels=3, kernel_size=4, stride=2, padding="causal", kernel_constraint="l2"),
            (2,),
            name="Conv1DTranspose(lazy, k4, s2, causal, l2 norm)",
        ),
        LayerExample(N.LayerNormalization(), (4,), name="LayerNormalization(lazy)", random_mask=True),
        LayerExample(N.LayerNormalization(axis=(-2, -1)), (3, 2), name="LayerNormalization(lazy, 2 axes)"),
        LayerExample(N.BatchNormalization(axis=2), (3, 2), name="BatchNormalization(lazy, axis 2, eval)"),
        LayerExample(
            N.GroupNormalization(2, cumulative=True),
            (4,),
            name="GroupNormalization(2, lazy, cumulative)",
            random_mask=True,
        ),
    ]


def example_layers() -> list[LayerExample]:
    return [*_convolutions(), *_pooling(), *_normalization(), *_lazy()]
