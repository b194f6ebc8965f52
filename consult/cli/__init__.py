"""The ``consult`` command line: one module per command group, each with ``register``.

- ``main``: the parser, assembled from the groups, and ``main(argv)``
- ``command``: the convention every command follows (``set_defaults(run=...)``)
- ``servers``: ``serve``, ``receive``, ``web``, ``worker``, ``migrate``; the job handlers
- ``demo``: ``demo``
- ``admin``: ``hospitals``, ``peers``, ``users``
- ``sending``: ``send``
- ``archive``: ``verify``, ``receipt``, ``export``
- ``imaging``: ``previews status|rebuild``, ``render``
- ``progress``: the progress bar the long commands draw
"""
