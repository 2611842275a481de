"""Pure decision logic of a download: which blocks to request, whom to upload to, whom to ban.

Nothing here does I/O, reads a clock or uses the global random module: the agent passes time
and a ``random.Random`` in, so every decision replays exactly in tests.
"""

from p2pdist.piece_picker.availability import Availability
from p2pdist.piece_picker.choker import ChokerState, PeerStats, decide
from p2pdist.piece_picker.picker import FREE, RECEIVED, REQUESTED, Block, PickerError, PiecePicker
from p2pdist.piece_picker.smartban import SmartBan, Strikes

__all__ = [
    "FREE",
    "RECEIVED",
    "REQUESTED",
    "Availability",
    "Block",
    "ChokerState",
    "PeerStats",
    "PickerError",
    "PiecePicker",
    "SmartBan",
    "Strikes",
    "decide",
]
