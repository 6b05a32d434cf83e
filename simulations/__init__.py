"""Experiment and benchmark runners; their outputs live in simulations/results/."""
