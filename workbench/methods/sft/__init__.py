"""Supervised fine-tuning: the completion NLL and its module."""
