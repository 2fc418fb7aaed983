"""CLI commands: thin functions that parse options and call the stages."""
