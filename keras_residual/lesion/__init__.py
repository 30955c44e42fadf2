"""Lesion and path analysis of residual networks (Veit et al. 2016, seed 004)."""
