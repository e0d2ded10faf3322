"""sl-core's built-in layers, grouped as in the reference (simple, dense, position, ...)."""
