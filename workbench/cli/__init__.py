"""The command line: the parser (main) and the commands."""
