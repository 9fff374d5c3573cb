"""Measuring a model: `udrl eval`, degenerate outputs, query focus, the model card."""
