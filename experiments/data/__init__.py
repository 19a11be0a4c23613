"""A run's data: the embedded corpus or real sources, tokenized, sharded and packed into rows."""
