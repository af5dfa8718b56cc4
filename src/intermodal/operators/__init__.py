"""Ray Data operators: callable classes that load once in ``__init__`` and map a batch."""
