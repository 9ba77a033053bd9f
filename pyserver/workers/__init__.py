"""Front-end worker processes (``--frontend-workers N``, N > 1).

The engine process holds the models, the C++ core and the metrics endpoint;
each worker process runs its own event loop with the HTTP listener (one port
shared through SO_REUSEPORT) and the gRPC listener, parses and validates the
wire formats, and hands requests to the engine through the hop:

- ``ring``: one shared-memory byte ring per direction and per worker, and a
  doorbell socket that carries the ring positions (the only writes the
  other side trusts), so a tensor crosses once, through shared memory, with
  no pickling;
- ``hop``: the record formats of requests and responses on those rings;
- ``control``: everything that is not inference (status, statistics, model
  control, shared-memory registration) as framed calls on a control socket;
- ``remote``: the worker's ``RemoteServer``, the server API front ends use;
- ``pool``: the engine's side: spawning, serving and restarting workers;
- ``worker``: the worker process's entry point.
"""
