"""Models: the popularity baseline, the text encoder, the retrieval towers and the ranker."""
