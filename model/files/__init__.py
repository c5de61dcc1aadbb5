"""Files: the checkpoint format and its checks, the config schema and bounded, non-blocking file access."""
