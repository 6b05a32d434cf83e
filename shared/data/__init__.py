"""Data: files on disk -> interactions, item texts, leave-one-out splits, client partitions."""
