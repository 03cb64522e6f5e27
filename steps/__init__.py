"""Plain, typed step functions. No Hera import here: every step runs as plain Python."""
