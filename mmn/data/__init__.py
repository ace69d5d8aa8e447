"""Skeleton data: the formats users download, the release's preprocessing, and the built-in synthetic set."""
