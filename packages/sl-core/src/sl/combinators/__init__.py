"""Combinators: layers built from other layers, one module per family.

* :mod:`~sl.combinators.serial`: ``Serial`` (``Sequential``), ``SerialModules``;
* :mod:`~sl.combinators.parallel`: ``Parallel``, ``ParallelChannels``;
* :mod:`~sl.combinators.residual`: ``Residual``;
* :mod:`~sl.combinators.repeat`: ``Repeat``;
* :mod:`~sl.combinators.wrappers`: ``WrapperMixin`` (base for one-child wrappers),
  ``CheckpointGradient``, ``Blockwise``;
* :mod:`~sl.combinators.bidirectional`: ``Bidirectional``.

Combinators compose their children's metadata with the rules in
:mod:`sl.composition_rules`, pass ``training`` to every child explicitly, hand each
child a shallow copy of ``constants`` (so a child cannot change what its siblings
see) and pass ``shift_initial_state`` and ``flush`` through to their children.
"""

from sl.combinators.bidirectional import Bidirectional
from sl.combinators.parallel import Parallel, ParallelChannels
from sl.combinators.repeat import Repeat
from sl.combinators.residual import Residual
from sl.combinators.serial import Sequential, Serial, SerialCombinatorMixin, SerialModules
from sl.combinators.wrappers import Blockwise, CheckpointGradient, WrapperMixin
from sl.merging import CombinationMode

__all__ = [
    "Bidirectional",
    "Blockwise",
    "CheckpointGradient",
    "CombinationMode",
    "Parallel",
    "ParallelChannels",
    "Repeat",
    "Residual",
    "Sequential",
    "Serial",
    "SerialCombinatorMixin",
    "SerialModules",
    "WrapperMixin",
]
