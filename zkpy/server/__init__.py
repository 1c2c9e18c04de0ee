"""The member process: the trio shell that runs the core, the log, checkpoints and the
client and peer listeners."""
