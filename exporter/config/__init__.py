"""The YAML config: its model (``model``), bounded file reading (``files``), value parsers with their bounds
(``values``), credentials (``secrets``) and the loader that validates a document into a ``Config`` (``load``).

Import from the submodules: the loader derives the ``collectors:`` section from the collector registry, which
itself builds on the model, so this package's ``__init__`` imports nothing.
"""
