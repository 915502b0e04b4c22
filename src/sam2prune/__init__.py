"""sam2prune: token-pruned SAM 2 video object segmentation.

Importing the package is cheap; torch and sam2 load when a predictor is built.
"""

from sam2prune.config import PruningConfig
from sam2prune.models import build_predictor

__all__ = ["PruningConfig", "build_predictor"]
__version__ = "0.1.0"
