"""The human-in-the-loop side: cleaning reviewed masks, the corrections store, the user's model versions."""
