"""`fixeduser serve`: settings, the composition root, control socket, metrics, logs, supervision."""
