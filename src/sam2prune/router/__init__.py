"""Token scoring: which of a frame's tokens flow on into memory attention and the memory bank."""

from sam2prune.router.scorers import ScoringContext, TokenScorer, make_scorer, select_tokens

__all__ = ["ScoringContext", "TokenScorer", "make_scorer", "select_tokens"]
