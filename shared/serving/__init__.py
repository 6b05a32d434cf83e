"""`fedrec serve`: the model loaded once, answering recommend, search and explain over HTTP."""
