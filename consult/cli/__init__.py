"""The ``consult`` command line (``main``), one module per command group."""
