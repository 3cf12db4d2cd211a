"""The pool: connections to the replicas of one service, health-aware routing, retries."""
