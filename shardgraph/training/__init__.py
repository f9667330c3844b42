"""Training: negative sampling, the batch step, row-wise Adagrad, bucket orders, HOGWILD workers, the loop."""
