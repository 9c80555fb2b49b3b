"""One module per question of the paper; each streams activations into an accumulator."""
