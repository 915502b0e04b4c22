"""Video predictors: the official SAM 2 predictor with the fixes every predictor needs (the
baseline), the token-pruned predictor, and the per-object memory bank they read back from.

- ``baseline.py``: ``SAM2Predictor``, sam2's ``SAM2VideoPredictor`` extended;
- ``pruned.py``: ``PrunedSAM2VideoPredictor``, the hooks where tokens are chosen, stored and read;
- ``bank.py``: ``SparseMemoryBank``, what memory attention reads back and what it holds;
- ``session.py``: ``TrackingSession``, per-video state (memory banks, bounded memory) on sam2's inference state.
"""

from sam2prune.predictor.bank import BankMemory, FrameMemoryBytes, SparseMemoryBank, index_dtype
from sam2prune.predictor.baseline import SAM2Predictor, cuda_extension_available
from sam2prune.predictor.pruned import PrunedSAM2VideoPredictor
from sam2prune.predictor.session import TrackingSession

__all__ = [
    "BankMemory",
    "FrameMemoryBytes",
    "PrunedSAM2VideoPredictor",
    "SAM2Predictor",
    "SparseMemoryBank",
    "TrackingSession",
    "cuda_extension_available",
    "index_dtype",
]
