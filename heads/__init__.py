"""Classifier heads: training, evaluation, versioned artifacts, registry and numpy serving."""
