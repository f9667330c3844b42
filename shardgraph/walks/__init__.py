"""Random-walk embeddings: walks over the graph (compiled), skip-gram pairs, node classification."""
