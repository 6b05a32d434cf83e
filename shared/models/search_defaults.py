"""Search's two knobs (shared/models/search.py says what they do), apart from the model stack, so
that `fedrec` can show them as option defaults without importing torch."""

CANDIDATES = 100  # items re-scored by the user's model, the ranker's own top-N by default
PERSONAL_WEIGHT = 0.3  # the personal z-score's weight against the text's (1): the query leads
