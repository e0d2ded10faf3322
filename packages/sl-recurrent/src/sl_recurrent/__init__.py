"""sl-recurrent: LSTM, GRU, VanillaRNN, RNN(cell) and RG-LRU for sl (an sl plugin; depends on sl-core only).

Every layer is exported here (``from sl_recurrent import LSTM``) and registered by the
``recurrent`` plugin, so it also resolves as ``sl.LSTM`` / ``sl.recurrent.LSTM`` and from configs.
"""

from sl_recurrent.cell import RNN
from sl_recurrent.recurrent import GRU, LSTM, VanillaRNN
from sl_recurrent.rglru import RGLRU

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "RGLRU", "RNN", "VanillaRNN"]
