"""The HTTP side only: the app's route table served on one or more addresses, with TLS and basic auth.

``routes`` is what the app gives this package; ``send`` writes an answer; ``limits`` holds every limit on clients.
"""
