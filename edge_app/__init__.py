"""The ``edge-foct`` command line and the serving app (imports ``edge_foct.runtime``)."""
