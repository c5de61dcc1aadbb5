"""Scoring a model: metrics, failure strata, calibration and its per-clinic adaptation, report figures."""
