"""edgekit.workflows."""
