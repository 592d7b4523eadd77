"""The `mbo` command."""
