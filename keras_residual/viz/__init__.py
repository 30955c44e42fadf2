"""Visualization: receptive fields, top-k patches, guided backprop, images, plots, callbacks (seed 000, seed 003)."""
