"""In-process functions that lambda services call: the registry and the built-in examples."""
