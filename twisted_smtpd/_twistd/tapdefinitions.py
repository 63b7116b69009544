# -*- test-case-name: tests.test_tap -*-
"""
The flags of C{twistd smtpd} as L{twisted.python.usage.Options} declares
them: each flag's name, default, help text and coercer, and the long
description of C{--help}.  The flags that run code as they are parsed
(repeatable ones, deliveries without a value) are methods of
L{twisted_smtpd._twistd.tap.Options}, and so are the shell completions.
"""

from __future__ import annotations

from typing import Any

from twisted_smtpd._core.optionchecks import BARE_NEWLINE_POLICIES
from twisted_smtpd._core.optionvalues import MIN_TIMEOUT
from twisted_smtpd._twistd.tapconfig import checkHostname, ipList
from twisted_smtpd._twistd.tapflags import (
    _DEFAULTS,
    DEFAULT_ROTATE_LENGTH,
    DEFAULT_ROTATED_LOGS,
    LOG_FORMATS,
    _choice,
    _number,
    _numeric,
    _rate,
    _timeout,
)

LONGDESC = (
    "Run an SMTP (or, with --lmtp, LMTP) server. Without a delivery option "
    "every accepted message is stored in the Maildir ./Maildir; --maildir, "
    "--mbox, --relay, --lmtp-to, --pipe, --webhook, --amqp, --debug, --sink and "
    "--handler exclude "
    "each other. ENDPOINT is a Twisted server endpoint string: tcp:PORT, "
    "ssl:PORT (implicit TLS with --tls-cert; not tls:), unix:PATH, "
    "systemd:domain=INET:index=0, haproxy:tcp:PORT. --hide takes STARTTLS, "
    "SIZE, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, DSN, "
    "REQUIRETLS or CHUNKING; a hidden SIZE limit still applies. --config FILE "
    "reads the same options (long names as keys) from a TOML file (*.toml) "
    "or the [smtpd] section of an INI file; the command line wins. SIGHUP "
    "reloads the TLS certificates."
)

FLAGS: list[list[Any]] = [
    ["lmtp", None, "Speak LMTP (RFC 2033) instead of SMTP."],
    [
        "request-cert",
        None,
        "Require a client certificate signed by --tls-ca (or a system CA).",
    ],
    ["allow-insecure-auth", None, "Offer AUTH before TLS."],
    [
        "auth-optional",
        None,
        "With --auth (or a --handler's onAuth), accept mail without AUTH too.",
    ],
    ["no-reverse-lookup", None, "Do not look up the client's host name."],
    [
        "check-config",
        None,
        "Check the options, the --config file and the files they name, warn of what has"
        " no effect, and exit (status 0: it would start) without listening.",
    ],
    [
        "quiet",
        None,
        "No log line per connection and message (refusals, failed AUTH and errors"
        " are still logged).",
    ],
    [
        "maildir-per-recipient",
        None,
        "Store a copy per recipient in PATH/domains/DOMAIN/LOCALPART/.",
    ],
    [
        "maildir-existing-only",
        None,
        "With --maildir-per-recipient, refuse recipients whose Maildir does not exist.",
    ],
    ["maildir-trace", None, "Prepend Return-Path: and Received: to stored messages."],
    [
        "relay-insecure",
        None,
        "Relay without verifying the relay's certificate; a failed STARTTLS handshake"
        " is then tried once more in plain text (not with --relay-require-tls, nor with"
        " credentials).",
    ],
    ["relay-require-tls", None, "Refuse a relay that does not offer STARTTLS."],
]

PARAMETERS: list[list[Any]] = [
    [
        "hostname",
        None,
        None,
        "The server's name in greetings, U-labels as A-labels [default: this host's FQDN].",
        checkHostname,
    ],
    ["banner", None, None, "Extra text for the 220 greeting (printable US-ASCII)."],
    [
        "dns-server",
        None,
        None,
        "Ask this DNS server, HOST[:PORT], for client names [default: /etc/resolv.conf's].",
    ],
    [
        "metrics",
        None,
        None,
        "Serve Prometheus /metrics and /healthz on this endpoint, e.g."
        " tcp:9101:interface=127.0.0.1 (needs the metrics extra).",
    ],
    [
        "ignored-hosts",
        None,
        None,
        "Client IP addresses, comma-separated, whose sessions are not logged (health checks).",
        ipList,
    ],
    _numeric(
        "size",
        int,
        False,
        "Largest message accepted, in bytes (Postfix's default); 0 for no limit.",
    ),
    _numeric("max-clients", int, False, "Concurrent connections; 0 for no limit."),
    _numeric(
        "socket-timeout",
        float,
        True,
        "Seconds of client silence, replies unread or a line unfinished before 421 (at least 1).",
        MIN_TIMEOUT,
    ),
    _numeric("close-timeout", float, False, "Seconds a stopping server waits for mail."),
    _numeric(
        "tls-handshake-timeout",
        float,
        True,
        "Seconds a TLS handshake may take in all (at least 1).",
        MIN_TIMEOUT,
    ),
    _numeric(
        "handler-timeout",
        float,
        True,
        "Seconds a hook may take to answer before 421 (at least 1).",
        MIN_TIMEOUT,
    ),
    _numeric(
        "max-clients-per-ip",
        int,
        False,
        "Concurrent connections from one client address; 0 for no limit.",
    ),
    _numeric(
        "client-ipv6-prefix-length",
        int,
        False,
        "IPv6 clients are counted by their network of this many bits (0 to 128) for "
        "--max-clients-per-ip, --max-connection-rate and --max-auth-rate.",
    ),
    [
        "max-connection-rate",
        None,
        None,
        "Connections one client address may open: COUNT/SECONDS, SECONDS at least 1 "
        "[default: no limit].",
        _rate("max-connection-rate", "COUNT"),
    ],
    [
        "max-auth-rate",
        None,
        None,
        "AUTH commands one client address may give over all its sessions: COUNT/SECONDS, "
        "SECONDS at least 1; past it AUTH is answered 450 [default: no limit].",
        _rate("max-auth-rate", "COUNT"),
    ],
    [
        "min-data-rate",
        None,
        None,
        "Cut DATA/BDAT transfers slower than BYTES/SECONDS, SECONDS at least 1 "
        "[default: no minimum].",
        _rate("min-data-rate", "BYTES"),
    ],
    _numeric("max-recipients", int, True, "Recipients per transaction."),
    _numeric(
        "max-junk-commands",
        int,
        False,
        "Commands that move no message on (HELO, EHLO, LHLO, RSET, NOOP, VRFY, "
        "HELP, BDAT 0) since the last message accepted: the first N + 1 are free, "
        "each further one counts as an error, as with Postfix's "
        "smtpd_junk_command_limit (0: no limit).",
    ),
    _numeric(
        "soft-error-limit",
        int,
        True,
        "Errors without a message accepted after which each reply is sent"
        " --error-sleep seconds late (Postfix's smtpd_soft_error_limit).",
    ),
    _numeric(
        "error-sleep",
        float,
        False,
        "Seconds a reply past --soft-error-limit is held (Postfix's"
        " smtpd_error_sleep_time; 0: none, at most 300).",
    ),
    [
        "workers",
        None,
        1,
        "Serve the listeners from N processes; the parent binds the sockets.",
        _number("workers", int, positive=True),
    ],
    [
        "worker-timeout",
        None,
        60.0,
        "Seconds a --workers worker may give no sign of life before it is killed "
        "and started again; 0 for never, else at least 1.",
        _timeout("worker-timeout", 1.0),
    ],
    [
        "bare-newline",
        None,
        _DEFAULTS["bareNewline"],
        "What a bare CR or LF in message text does: reject the message, "
        "normalize it to CRLF, or keep it (legacy). It never ends a message.",
        _choice("bare-newline", sorted(BARE_NEWLINE_POLICIES)),
    ],
    [
        "tls-cert",
        None,
        None,
        "PEM certificate chain for STARTTLS and ssl: listeners [default: a"
        " self-signed one for --hostname, with a warning].",
    ],
    ["tls-key", None, None, "PEM private key [default: in --tls-cert]."],
    [
        "tls-ca",
        None,
        None,
        "PEM CA bundle that signs client certificates [default: system CAs].",
    ],
    [
        "tls-ciphers",
        None,
        None,
        "OpenSSL cipher string for TLS 1.2; TLS_* names in it set the TLS 1.3"
        " suites [default: Twisted's, and OpenSSL's for TLS 1.3].",
    ],
    [
        "tls-min-version",
        None,
        "1.2",
        "Lowest TLS version accepted (1.2, 1.3).",
        _choice("tls-min-version", ("1.2", "1.3")),
    ],
    ["auth-methods", None, "PLAIN,LOGIN", "AUTH mechanisms (also CRAM-MD5, XOAUTH2)."],
    ["mbox", None, None, "Append every message to this mbox file."],
    ["relay", None, None, "Relay every message to this smarthost, HOST[:PORT]."],
    ["relay-ca", None, None, "PEM CA bundle to verify the relay [default: system CAs]."],
    ["relay-user", None, None, "User name for AUTH at the relay."],
    ["relay-password", None, None, "Password for AUTH at the relay."],
    ["relay-auth", None, None, "USER:PASSWORD for AUTH at the relay."],
    [
        "relay-sessions",
        None,
        None,
        "Sessions open to the relay at once, reused from message to message [default: 4].",
        _number("relay-sessions", int, positive=True),
    ],
    [
        "relay-idle",
        None,
        None,
        "Seconds an unused session to the relay stays open; 0 for none [default: 30].",
        _number("relay-idle", float, positive=False),
    ],
    ["lmtp-to", None, None, "Deliver every message over LMTP to this client endpoint."],
    ["pipe", None, None, "Pipe every message into this command (split like a shell)."],
    ["pipe-spool", None, None, "Where --pipe spools messages [default: $TMPDIR]."],
    [
        "pipe-concurrency",
        None,
        None,
        "Commands --pipe runs at once; more messages wait for one [default: 20].",
        _number("pipe-concurrency", int, positive=True),
    ],
    ["webhook", None, None, "POST every message to this http:// or https:// URL."],
    ["webhook-secret", None, None, "Sign webhook requests with HMAC-SHA256 and this key."],
    [
        "webhook-format",
        None,
        None,
        "Webhook body: raw (multipart/form-data: envelope, message) or json [default: raw].",
        _choice("webhook-format", ("raw", "json")),
    ],
    ["webhook-ca", None, None, "PEM CA bundle to verify the webhook [default: system CAs]."],
    [
        "webhook-concurrency",
        None,
        None,
        "Messages --webhook posts at once; more wait for one [default: 20].",
        _number("webhook-concurrency", int, positive=True),
    ],
    ["amqp", None, None, "Publish every message to RabbitMQ: amqp[s]://USER:PASS@HOST/VHOST."],
    ["amqp-exchange", None, None, "Exchange to publish to [default: the default exchange]."],
    ["amqp-routing-key", None, None, "Routing key [default: the queue's name]."],
    ["amqp-queue", None, None, "Durable queue declared at connection [default: smtpd]."],
    ["amqp-ca", None, None, "PEM CA bundle to verify amqps:// [default: system CAs]."],
    ["handler", None, None, "Use the handler made by MODULE:CALLABLE(**handler-options)."],
    [
        "log-format",
        None,
        "text",
        "Log as text lines or as JSON lines (text, json).",
        _choice("log-format", LOG_FORMATS),
    ],
    [
        "log-rotate-keep",
        None,
        DEFAULT_ROTATED_LOGS,
        "Rotated files twistd --logfile PATH keeps (PATH.1 to PATH.N), the older ones"
        " deleted; 0 keeps them all.",
        _number("log-rotate-keep", int, positive=False),
    ],
    [
        "log-rotate-length",
        None,
        DEFAULT_ROTATE_LENGTH,
        "Bytes at which twistd --logfile PATH is rotated; 0 never (logrotate does it).",
        _number("log-rotate-length", int, positive=False),
    ],
]
