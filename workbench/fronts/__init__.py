"""Pareto fronts: the data (pareto), fronts of finished runs, plots, and the builders."""
