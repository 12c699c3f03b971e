"""A complete example provider (SceneDB) and its emulator, as the guide "Writing a provider" shows them."""
