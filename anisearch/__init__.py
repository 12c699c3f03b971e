"""anisearch: which anime, which episode, which second is this screenshot from."""
