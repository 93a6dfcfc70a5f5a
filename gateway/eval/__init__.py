"""Evaluation building blocks: datasets and answer checking (pure, no model)."""
