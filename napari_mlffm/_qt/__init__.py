"""Qt dock widgets of the plugin, kept apart from the headless code."""
