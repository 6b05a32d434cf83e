"""Running fedrec as a real deployment: credentials, and checks made before a process starts."""
