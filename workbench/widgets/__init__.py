"""ipywidgets views over the core (no training logic here)."""
