"""edgekit.measure."""
