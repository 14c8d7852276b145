"""Limits on what HTTP clients may make the exporter do (docs/limits.md lists them all).

The other modules read them as ``limits.NAME`` when they need them, so one value serves every module.
"""

MAX_HANDLER_THREADS = 16  # requests answered at once; more wait in line (their connections stay open)
MAX_CONNECTIONS = 512  # open connections per listen address, at most half the process's descriptor limit
LISTEN_BACKLOG = 128  # connections the kernel holds before the accept loop takes them
REQUEST_TIMEOUT = 10.0  # from a connection's first byte (or its TLS handshake) to the end of its request
IDLE_TIMEOUT = 30.0  # a connection with no request yet, or kept alive between requests
WRITE_TIMEOUT = 30.0  # writing one batch (about 256 kB) of an answer, however steadily the client reads
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
MAX_HEADER_LINES = 100
MAX_BODY = 64 * 1024  # a request body (POST /-/reload needs none)
# After a keep-alive answer the handler thread waits this long for the next request head on the same connection
# before handing it back to the accept loop: a scraper answered back to back is served by one thread, without
# a hand-off through the accept loop (two thread switches) per request. Only while no other request waits in
# line, and only a complete head keeps the thread: a slow client still holds none.
KEEPALIVE_LINGER = 0.005
# After an error answer to a client that may still be sending: how long to read (and drop) what it sends, so
# that closing does not reset the connection before the client has read the answer.
ERROR_LINGER = 0.5

WRITE_BATCH = 256 * 1024  # about this many bytes of an answer per system call (a batch)
MAX_BUFFERS = 256  # buffers per sendmsg, well under IOV_MAX (1,024 on Linux)
