"""The ``closedpaw`` command line: a thin layer over the library."""
