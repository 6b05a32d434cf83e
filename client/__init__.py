"""The ClientApp: global arrays in -> work on this node's private data -> update and metrics out."""
