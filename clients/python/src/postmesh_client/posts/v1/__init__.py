"""posts.v1, generated from proto/posts/v1 by scripts/gen-clients.sh."""
