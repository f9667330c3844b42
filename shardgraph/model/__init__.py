"""The score function: operators, comparators, losses, and the model that combines them."""
