"""Using the embeddings: export, the query model (score, predict, neighbours), ANN indexes, fold-in."""
