"""The host below everything: mount table, private files."""
