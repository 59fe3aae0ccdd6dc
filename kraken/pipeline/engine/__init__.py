"""The pipeline engine: definitions compiled (``compiler``) into a graph of components
(``graph``, ``components``) that a started pipeline (``runtime``) walks packets through
(``packets``)."""
