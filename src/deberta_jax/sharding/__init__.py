"""Device meshes and the rules that place parameters and batches on them."""
