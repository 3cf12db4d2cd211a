"""h2pool's benchmark suite: h2pool and the alternatives side by side, in one run.

Run it with ``python -m benchmarks [--size tiny|small|full] [--only NAME ...] [--out DIR]``
from the repository root (see ``docs/performance.md``). It starts its own peers on
127.0.0.1 (nghttpd, nginx, hypercorn and h2pool's own server in a subprocess), runs each
benchmark, prints a table of ratios, and writes ``results.md``, ``results.json`` and PNG plots
into the output directory. Figures are ratios between clients measured in the same run: the
absolute numbers drift with the machine and its load.

Modules: one per benchmark (``small_gets``, ``latency``, ``transfer``, ``server_load``,
``memory``, ``rpc``), the clients (``plain``, ``clients``, and the gRPC clients in the
``rpc_client`` subprocess program), the load generators (``load``), the peers (``peers``,
with the ``h2pool_server`` and ``memory_probe`` subprocess programs), the results
model and its rendering (``results``, ``plots``), the sizes (``sizes``) and the driver
(``suite``).
"""
