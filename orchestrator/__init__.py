"""The front service: generate_music over the LM and DiT services."""
