"""Managed servers: the MLflow UI, JupyterLab, the class board on PostgreSQL."""
