"""Flower processes on this machine, for `fedrec simulate`, the tests and the benchmarks: a private
simulation SuperLink (superlink.py) and a whole TLS deployment, each party on a network namespace
of its own or on loopback (deployment.py, netns.py)."""
