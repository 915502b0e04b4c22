"""Token scorers: which of a frame's tokens flow on into memory attention and the memory bank.

- ``baselines.py``: the scoring context, the top-k selection, and the scorers that need no
  trained weights (``prior``, ``uniform``, ``random``);
- ``prior.py``: the previous mask (or the prompt) pooled to the token grid;
- ``router/``: the router, fusing visual, text, uncertainty and prior signals
  (``fusion.py``; ``semantic.py`` the text signal, ``uncertainty.py`` the dropout signal,
  ``train.py`` training its MLP).
"""

from sam2prune.scorers.baselines import ScoringContext, TokenScorer, make_scorer, select_tokens

__all__ = ["ScoringContext", "TokenScorer", "make_scorer", "select_tokens"]
