"""edgekit.passes."""
