"""Everything that runs inside a shardd worker process."""
