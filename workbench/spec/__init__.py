"""RunSpec and its sections, errors, the registries of what a spec can name, plugin loading."""
