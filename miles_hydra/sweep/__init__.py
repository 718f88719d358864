"""Sweeps: all-or-nothing validation of every variant, manifests, and the sweep report."""
