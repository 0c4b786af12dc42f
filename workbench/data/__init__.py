"""Data: built-in tasks, user datasets in TRL's formats, tokenisation with loss masks."""
