"""The `ceti` command line."""
