"""Routing evaluation: labelled datasets, answer checking, the ``eval`` and ``calibrate``
commands, and their metrics, costs and reports (see docs/routing-eval.md)."""
