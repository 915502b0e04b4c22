"""Text: encoders for the semantic signal, and the automatic prompt pipeline (ROI -> caption -> phrase)."""
