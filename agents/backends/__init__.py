"""Model backends. Import a backend module only through `build_backend`."""
