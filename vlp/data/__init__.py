"""Data: region feature stores, annotation readers, ToyWorld, batches."""
