"""The pure core: the znode tree, prep, sessions, watches and ACLs, with no I/O, clocks or
randomness (time and chance arrive as arguments)."""
