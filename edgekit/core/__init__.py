"""edgekit.core."""
