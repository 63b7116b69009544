"""
The server glue: the protocol, its commands, the factory and C{SMTPServer},
TLS, AUTH through twisted.cred, PROXY and XCLIENT, timeouts, limits, logs
and metrics.  Nothing here knows C{twistd}.

The protocol (L{protocol}) reads, splits and dispatches; the commands and
the life cycle of a session live in their own modules and see it only
through the interfaces of L{context}.
"""
