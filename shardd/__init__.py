"""shardd: supervisor and operator tools."""
