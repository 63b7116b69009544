"""
The server glue: the protocol, its commands, the factory and C{SMTPServer},
TLS, AUTH through twisted.cred, PROXY and XCLIENT, timeouts, limits, logs
and metrics.  Nothing here knows C{twistd}.
"""
