"""Physical models: each owns its state on a backend and knows how to step it."""
