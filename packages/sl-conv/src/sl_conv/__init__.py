"""sl-conv: convolution, pooling and normalization layers for sl (an sl plugin; depends on sl-core only).

Every layer is exported here (``from sl_conv import Conv1D``) and registered by the ``conv``
plugin, so it also resolves as ``sl.Conv1D`` / ``sl.conv.Conv1D`` and from configs.
"""

from sl_conv.convolution import (
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    DepthwiseConv1D,
    DepthwiseConv2D,
)
from sl_conv.normalization import (
    BatchNormalization,
    GroupNormalization,
    L2Normalize,
    L2WeightNormalization,
    LayerNormalization,
    RMSNormalization,
    SpectralWeightNormalization,
    WeightNormalization,
)
from sl_conv.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    MinPooling1D,
    MinPooling2D,
    MinPooling3D,
)

__version__ = "0.1.0"

__all__ = [
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "BatchNormalization",
    "Conv1D",
    "Conv1DTranspose",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "GroupNormalization",
    "L2Normalize",
    "L2WeightNormalization",
    "LayerNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "MinPooling1D",
    "MinPooling2D",
    "MinPooling3D",
    "RMSNormalization",
    "SpectralWeightNormalization",
    "WeightNormalization",
]
