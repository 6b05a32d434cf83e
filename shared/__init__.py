"""Code that both sides of the federation use: data, models, metrics and configuration."""
