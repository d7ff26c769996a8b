"""Executors: the torch model runner and the simulated executor, side by side."""
