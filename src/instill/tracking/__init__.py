"""Experiment trackers (SwanLab, TensorBoard) and hardware sampling, shared by training and evaluation."""
