"""The `motionctl` command line (see motionctl/cli.py)."""
