"""Output files: checked and claimed before the long work, and one segmented case written all or nothing."""
