"""pyserver's benchmarks as one harness: ``python -m perf <scenario> [options]``, with
``python -m perf list`` naming the scenarios; pyserver-perf, the load tool, is
perf/pyserver_perf."""
