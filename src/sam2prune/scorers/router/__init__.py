"""The router: per-token signals (visual context, relevance to the object's text, dropout
uncertainty, the previous mask) fused into one score, training-free or by a trained MLP."""
