"""GraphSAGE node classification over a dataset with node tables: sampling, model, training, prediction."""
