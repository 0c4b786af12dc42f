"""Models: loading a base (a folder, a hub id, the built-in tiny base), adapters, kernel
patching, export."""
