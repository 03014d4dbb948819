"""Built-in skills that run on the host for the gate."""
