"""Evaluation harness: ranking metrics and the full and sampled protocols."""
