"""Generated from proto/posts by scripts/gen-clients.sh."""
