"""The pool: connections to the endpoints of one service, health-aware routing, retries."""
