"""The HTTP side only: the app's route table served on one or more addresses, with TLS and basic auth.

``listening`` binds the addresses and runs a ``connections`` loop per address, which reads plain-HTTP request
heads without blocking and hands complete ones to its ``handler_pool``; there ``handler`` answers each request
(``request_head`` reads and parses it, ``send`` writes the answer). ``routes`` is what the app gives this
package; ``limits`` holds every limit on clients.
"""
