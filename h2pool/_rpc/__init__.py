"""gRPC over the pool; the public names are in h2pool.rpc."""
