"""
The pure protocol core: grammar, addresses, replies, the DATA decoder, SASL,
the session records and options.  Nothing here imports Twisted.
"""
