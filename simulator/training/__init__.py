"""Forward graph -> one training step: backward, recomputation, optimizer, fusion."""
