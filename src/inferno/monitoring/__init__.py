"""Watching served models: Prometheus metrics (drift and data validation come later)."""
