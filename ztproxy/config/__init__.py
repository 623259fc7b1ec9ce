"""Configuration: one YAML file, parsed into frozen dataclasses, every problem named
by its key path. `load.load_config(path)` is the only entry point."""
