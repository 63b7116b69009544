# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd smtpd} command line: L{Options} and L{makeService}.

Every setting is checked while the options are parsed, so that a mistake
becomes one L{usage.UsageError} line from C{twistd} rather than a traceback
from a half-started server: endpoint strings are parsed, certificate files
read, the delivery handler built and the Maildir created.

C{--config FILE} reads the same options from a TOML (C{*.toml}) or INI
(section C{[smtpd]}) file; flags on the command line win (L{twisted_smtpd._twistd.tapfile}).
The switches and the flags taking a value, with their help texts and
coercers, are declared in L{twisted_smtpd._twistd.tapdefinitions}.
"""

from __future__ import annotations

import getopt
import ipaddress
import sys
from collections.abc import Sequence
from typing import Any

from twisted.cred.strcred import AuthOptionMixin
from twisted.python import usage
from zope.interface import Interface

from twisted_smtpd._core.files import NotRegularFile, checkReadable, keepReads, keptReads
from twisted_smtpd._core.hostname import UnusableMachineName, machineName
from twisted_smtpd._core.optionchecks import (
    AUTH_METHODS,
    BARE_NEWLINE_POLICIES,
    HIDEABLE,
    KNOWN_COMMANDS,
)
from twisted_smtpd._core.options import ServerOptions
from twisted_smtpd._core.optionvalues import hostBits, sniName
from twisted_smtpd._core.printable import printable
from twisted_smtpd._core.version import __version__
from twisted_smtpd._serving.listeners import OwnKeys, splitDescription
from twisted_smtpd._serving.resolve import parseDNSServer
from twisted_smtpd._serving.sni import TLSPolicy, certificateKinds
from twisted_smtpd._serving.tls import ServerTLS
from twisted_smtpd._twistd.daemon import SMTPDaemon
from twisted_smtpd._twistd.heldsignals import HELD
from twisted_smtpd._twistd.logfile import jsonBesideSyslog, rotateKeepUnused
from twisted_smtpd._twistd.redact import withoutPassword
from twisted_smtpd._twistd.runuser import asRunUser, runIdentity
from twisted_smtpd._twistd.tapauth import (
    bytesUsers,
    checkAuth,
    checkAuthOffered,
    checkAuthOptional,
    unixPasswordsProblem,
)
from twisted_smtpd._twistd.tapconfig import (
    checkEndpoint,
    checkMetrics,
    exitChecked,
    exitWithError,
    reason,
)
from twisted_smtpd._twistd.tapdefinitions import FLAGS, LONGDESC, PARAMETERS
from twisted_smtpd._twistd.tapflags import (
    _HIDE_ATTRIBUTES,
    _MODIFIERS,
    _NETWORKS,
    _NUMBERS,
    _PARAMETER_DELIVERIES,
    _RATES,
    _SWITCHES,
    DEFAULT_LISTEN,
    DEFAULT_MAILDIR,
    DELIVERIES,
    FIELD_FLAGS,
    LOG_FORMATS,
)
from twisted_smtpd._twistd.taphandlers import HANDLERS
from twisted_smtpd._twistd.taphost import (
    checkDistinctAddresses,
    checkPidFile,
    pidFileStays,
    socketDirectory,
)
from twisted_smtpd._twistd.tapservice import makeService
from twisted_smtpd._twistd.tapunused import cappedBacklogs, unusedFlags
from twisted_smtpd._twistd.workerlisteners import (
    INHERITED,
    bindAll,
    checkInherited,
    checkWorkers,
    inheritedListeners,
)
from twisted_smtpd.interfaces import ISMTPHandler


class _CredentialInterfaces:
    """
    The credentials interfaces AUTH gives a checker (PLAIN and LOGIN a
    password, CRAM-MD5 a hashed one), as L{Options.supportedInterfaces}:
    imported from C{twisted.cred} when C{--auth}, C{--help-auth} or
    C{--help-auth-type} asks for them, so that a server without C{--auth}
    does not load it.
    """

    def __get__(self, instance: object, owner: type | None = None) -> tuple[type[Interface], ...]:
        from twisted.cred.credentials import IUsernameHashedPassword, IUsernamePassword

        return (IUsernamePassword, IUsernameHashedPassword)


class Options(AuthOptionMixin, usage.Options):
    """
    Options of C{twistd smtpd}.

    After L{parseOptions}: C{self["listen"]} holds the endpoint strings,
    C{self["handler"]} the L{ISMTPHandler} chosen by the delivery flags,
    C{self["serverOptions"]} the L{ServerOptions},
    C{self.get("credCheckers", [])} the checkers of C{--auth}, and
    C{self["unused"]} a warning line for each flag given that changes
    nothing (L{unusedFlags}), logged at start.
    """

    synopsis = "[options]"
    longdesc = LONGDESC

    #: The credentials AUTH gives a checker (L{_CredentialInterfaces}).
    supportedInterfaces = _CredentialInterfaces()

    optFlags = FLAGS
    optParameters = PARAMETERS

    compData = usage.Completions(
        optActions={
            "maildir": usage.CompleteDirs(descr="Maildir directory"),
            "mbox": usage.CompleteFiles(descr="mbox file"),
            "config": usage.CompleteFiles(descr="configuration file"),
            "tls-cert": usage.CompleteFiles(descr="PEM certificate"),
            "tls-key": usage.CompleteFiles(descr="PEM private key"),
            "tls-ca": usage.CompleteFiles(descr="PEM CA bundle"),
            "bare-newline": usage.CompleteList(sorted(BARE_NEWLINE_POLICIES)),
            "hide": usage.CompleteList(sorted(HIDEABLE)),
            "disable": usage.CompleteList(sorted(KNOWN_COMMANDS)),
            "log-format": usage.CompleteList(LOG_FORMATS),
        },
        mutuallyExclusive=[DELIVERIES],
    )

    def __init__(self) -> None:
        super().__init__()
        for key in ("listen", "delivery", "disable", "hide", *_NETWORKS):
            self[key] = []
        self["maildir"] = DEFAULT_MAILDIR
        self["sni"] = {}
        self["handler-option"] = {}
        self["config"] = None
        # The delivery settings of the --config file that a delivery on
        # the command line dropped, a warning line each.
        self["dropped"] = []

    # -- repeatable options and deliveries ----------------------------------

    def opt_version(self) -> None:
        """
        Print the version of twisted-smtpd (and of Twisted and Python) and exit.
        """
        import twisted

        print(
            f"twisted-smtpd {__version__} (Twisted {twisted.__version__},"
            f" Python {sys.version.split()[0]})"
        )
        sys.exit(0)

    def opt_auth(self, description: str) -> None:
        """Add a checker for AUTH (see --help-auth): memory:USER:PASS, file:PATH, unix."""
        # A file: is read at start and again at a login once it changed:
        # by the user twistd --uid runs the server as.
        from twisted_smtpd._twistd.passwordfile import PasswordFile

        with asRunUser(self):
            checkAuth(description)
            kind, _, path = description.partition(":")
            passwordFile = PasswordFile(path) if kind == "file" else None
            if passwordFile is not None:
                passwordFile.readNow()
        if kind.strip().lower() == "unix":
            from twisted_smtpd._twistd.unixpasswords import UnixPasswords

            problem = unixPasswordsProblem(lambda: asRunUser(self))
            if problem is not None:
                raise usage.UsageError(f"--auth {description!r}: {problem}")
            # Twisted's unix checker, off the reactor thread and in the same
            # time for users that do not exist.
            self.addChecker(UnixPasswords())
            return
        if passwordFile is not None:
            # Twisted's file: checker, with the server's reading of the file.
            self.addChecker(passwordFile)
            return
        try:
            super().opt_auth(description)
        except usage.UsageError as e:
            # twisted.cred's own text (an unknown checker type): the flag
            # named, and not the description, which may hold a password.
            raise usage.UsageError(f"--auth: {e}") from None

    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint; repeatable [default: tcp:2525:interface=127.0.0.1]"""
        self["listen"].append(description)

    def opt_config(self, path: str) -> None:
        """Read options from this TOML (*.toml) or INI ([smtpd] section) file."""
        self["config"] = path

    def opt_sni(self, value: str) -> None:
        """Serve HOST with this certificate (and key): HOST=CERT[,KEY]; repeatable."""
        host, _, files = value.partition("=")
        certificate, _, key = files.partition(",")
        if not host.strip() or not certificate.strip():
            raise usage.UsageError(f"--sni: expected HOST=CERT[,KEY], got {value!r}")
        name = host.strip().lower()
        try:
            # As names are matched: "mx.example." is "mx.example".
            same = {sniName(given) for given in self["sni"]}
            twice = sniName(name) in same
        except ValueError:
            # Not a host name: ServerOptions says why.
            twice = name in self["sni"]
        if twice:
            # One would silently replace the other's certificate.
            raise usage.UsageError(f"--sni: {host.strip()!r} given twice")
        self["sni"][name] = (certificate.strip(), key.strip() or None)

    def opt_disable(self, command: str) -> None:
        """Answer this command with 502 (repeatable)."""
        self["disable"].append(self._oneOf("disable", command, KNOWN_COMMANDS))

    def opt_hide(self, extension: str) -> None:
        """Do not advertise this EHLO extension (repeatable; see below)."""
        self["hide"].append(self._oneOf("hide", extension, HIDEABLE))

    def _oneOf(self, flag: str, value: str, known: frozenset[str]) -> str:
        name = value.strip().upper()
        if name not in known:
            choices = " ".join(sorted(known))
            raise usage.UsageError(f"--{flag}: unknown value {value!r}; one of: {choices}")
        return name

    def _networks(self, flag: str, value: str) -> None:
        for part in value.split(","):
            part = part.strip()
            try:
                network = ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise usage.UsageError(
                    f"--{flag}: expected a CIDR network, got {value!r}"
                ) from None
            why = hostBits(part, network)
            if why is not None:
                raise usage.UsageError(f"--{flag}: {part!r} {why}")
            self[flag].append(str(network))

    def opt_proxy_trusted(self, network: str) -> None:
        """Trust PROXY headers (haproxy: listeners) from this CIDR network; repeatable."""
        self._networks("proxy-trusted", network)

    def opt_xclient(self, network: str) -> None:
        """Accept XCLIENT from this CIDR network; repeatable."""
        self._networks("xclient", network)

    def opt_xforward(self, network: str) -> None:
        """Accept XFORWARD from this CIDR network; repeatable."""
        self._networks("xforward", network)

    def opt_limit_exempt(self, network: str) -> None:
        """Exempt this CIDR network from the per-address limits; repeatable."""
        self._networks("limit-exempt", network)

    def opt_maildir(self, path: str) -> None:
        """Store every message in this Maildir, fsynced before the 250 [default: ./Maildir]"""
        self["maildir"] = path
        self["delivery"].append("maildir")

    def opt_sink(self) -> None:
        """Accept and discard every message."""
        self["delivery"].append("sink")

    def opt_debug(self) -> None:
        """Accept every message and print it on standard output."""
        self["delivery"].append("debug")

    def opt_handler_option(self, value: str) -> None:
        """KEY=VALUE keyword argument for the --handler callable; repeatable."""
        key, equals, setting = value.partition("=")
        if not equals or not key.strip().isidentifier():
            raise usage.UsageError(f"--handler-option: expected KEY=VALUE, got {value!r}")
        if key.strip() in self["handler-option"]:
            # One would silently replace the other.
            raise usage.UsageError(f"--handler-option: {key.strip()!r} given twice")
        self["handler-option"][key.strip()] = setting

    # -- parsing ----------------------------------------------------------------

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options} (the command line after C{smtpd}), with the options
        of a C{--config} file placed before them.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        if getattr(self, "parent", None) is not None:
            # Under twistd: SIGHUP and SIGUSR1 no longer end the process.
            HELD.install()
        arguments = list(sys.argv[1:] if options is None else options)
        # A --workers parent starts its workers with the same command line,
        # and hands them the files read here (L{makeService}).
        self["arguments"] = list(arguments)
        keepReads()
        try:
            given = self._givenOptions(arguments)
            path = given.get("config")
            if path is not None:
                # The file's reader is loaded for --config only.
                from twisted_smtpd._twistd.tapfile import fileArguments

                fromFile, self["dropped"] = fileArguments(path, set(given), self.longOpt)
                arguments = fromFile + arguments
            # The flags given, here or in the file: those that change
            # nothing are warned of at start (L{unusedFlags}).
            self["given"] = set(self._givenOptions(arguments))
            if "workers" not in self["given"]:
                keptReads()
            super().parseOptions(arguments)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            # Under twistd: one line instead of twistd's whole help text.
            exitWithError(str(e))

    def _givenOptions(self, arguments: list[str]) -> dict[str, str]:
        """
        The long names of the options in C{arguments}, each with its last
        value; nothing if they do not parse (the parser will say why).

        @raise usage.UsageError: C{--config} is given twice.
        """
        try:
            found, _ = getopt.getopt(arguments, self.shortOpt, self.longOpt)
        except getopt.error:
            return {}
        given: dict[str, str] = {}
        for option, value in found:
            name = option.lstrip("-")
            name = self.synonyms.get(name, name).replace("_", "-")
            if name == "config" and name in given:
                # Only one file is read: the other would be left out unsaid.
                raise usage.UsageError(
                    f"--config given twice ({given[name]!r}, {value!r}): one file is read"
                )
            given[name] = value
        return given

    def postOptions(self) -> None:
        """
        Check the endpoints and certificates, build the L{ServerOptions}
        and the handler.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        parent: Any = getattr(self, "parent", None) or {}
        checking = bool(self["check-config"])
        checkPidFile(parent.get("pidfile"), leftPid=not checking)
        # A --uid no user has: one line now, not twistd's traceback once
        # the ports are bound.
        runIdentity(self)
        rundir = socketDirectory(parent, int(self["workers"]))
        if self["metrics"] is not None:
            checkMetrics(self["metrics"], rundir, bindable=checking)
        if self["dns-server"] is not None:
            try:
                parseDNSServer(self["dns-server"])
            except ValueError as e:
                raise usage.UsageError(f"--dns-server {e}") from None
        for description in self["listen"]:
            # With --check-config, a port this process may not bind too.
            checkEndpoint(description, rundir, bindable=checking)
        checkDistinctAddresses(self["listen"], self["metrics"])
        chosen = set(self["delivery"])
        chosen.update(d for d in _PARAMETER_DELIVERIES if self[d] is not None)
        if len(chosen) > 1:
            given = ", ".join("--" + d for d in DELIVERIES if d in chosen)
            raise usage.UsageError(f"the deliveries are mutually exclusive; got {given}")
        delivery = chosen.pop() if chosen else "maildir"
        for modifier, needs in _MODIFIERS.items():
            # Given is enough: a value reading as false (0, "") does
            # nothing with another delivery either.
            named = self[modifier] or modifier in self.get("given", ())
            if named and needs != delivery:
                raise usage.UsageError(f"--{modifier} needs --{needs}")
        bytesUsers(self.get("credCheckers", []))
        self["serverOptions"] = options = self._serverOptions()
        self._checkTLS(options)
        self._checkOwnKeys(options)
        # Before "handler" holds the handler made (--handler's MODULE:CALLABLE).
        value = self[delivery] if delivery not in ("sink", "debug") else None
        self["handler"] = self._handler(delivery, options)
        checkAuthOffered(self.get("credCheckers", []), options, self["handler"])
        checkAuthOptional(self.get("credCheckers", []), options, self["handler"])
        self["unused"] = unusedFlags(
            self.get("given", ()),
            self["listen"],
            options,
            self.get("credCheckers", []),
            self["handler"],
            int(self["workers"]),
        )
        self["unused"] += self["dropped"] + cappedBacklogs(self["listen"])
        for line in (jsonBesideSyslog(self), rotateKeepUnused(self), pidFileStays(self)):
            if line is not None:
                self["unused"].append(line)
        self["deliveryDescription"] = printable(
            delivery if value is None else f"{delivery} {withoutPassword(str(value))}"
        )
        try:
            self["inherited"] = inheritedListeners()
            checkInherited(self["inherited"])
        except ValueError as e:
            # Inherited by a program a worker ran, which started a server.
            raise usage.UsageError(
                f"{INHERITED}: {e}; it is set only for the workers of --workers: unset it"
            ) from None
        self["workerListeners"] = []
        workersParent = self["workers"] > 1 and not self["inherited"]
        if workersParent:
            try:
                checkWorkers(int(self["workers"]), self["listen"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--workers: {reason(e)}") from e
        if checking:
            # Before the workers' listeners are bound: nothing listens.
            exitChecked(self["unused"])
        if workersParent:
            self["workerListeners"] = bindAll(self["listen"], int(self["workers"]))

    def _serverOptions(self) -> ServerOptions:
        """
        The L{ServerOptions} the flags describe.

        @raise usage.UsageError: If L{ServerOptions} refuses a value.
        """
        settings: dict[str, Any] = {attribute: self[flag] for flag, attribute in _NUMBERS.items()}
        settings.update({attribute: bool(self[flag]) for flag, attribute in _SWITCHES.items()})
        settings.update({attribute: self[flag] for flag, attribute in _NETWORKS.items()})
        settings.update({attribute: self[flag] for flag, attribute in _RATES.items()})
        settings["bareNewline"] = self["bare-newline"]
        settings["ignoredHosts"] = tuple(self["ignored-hosts"] or ())
        settings["tlsCiphers"] = self["tls-ciphers"]
        settings["tlsMinVersion"] = "TLSv" + self["tls-min-version"]
        settings["disabledCommands"] = tuple(self["disable"])
        settings["authMethods"] = tuple(self["auth-methods"].split(","))
        for extension in self["hide"]:
            settings[_HIDE_ATTRIBUTES[extension]] = True
        if self["tls-key"] is not None and self["tls-cert"] is None:
            raise usage.UsageError("--tls-key needs --tls-cert")
        for flag, attribute in [
            ("hostname", "name"),
            ("banner", "banner"),
            ("tls-cert", "certificate"),
            ("tls-key", "privateKey"),
            ("tls-ca", "caCertificates"),
        ]:
            if self[flag] is not None:
                settings[attribute] = self[flag]
        settings["sniOptions"] = dict(self["sni"])
        if "name" not in settings:
            # The default, said here so that a machine name that cannot
            # be used asks for --hostname without blaming the flag.
            try:
                settings["name"] = machineName()
            except UnusableMachineName as e:
                raise usage.UsageError(e.advice("--hostname")) from None
        try:
            return ServerOptions(**settings)
        except ValueError as e:
            why = reason(e)
            field, _, rest = why.partition(" ")
            if field.endswith(":") and field[:-1] in FIELD_FLAGS:
                # "authMethods: unknown AUTH methods: X": the flag says it.
                field, why = field[:-1], rest
            if why.startswith("unknown AUTH methods: "):
                why += "; one of: " + " ".join(sorted(AUTH_METHODS))
            if field in FIELD_FLAGS:
                why = f"--{FIELD_FLAGS[field]}: {why}"
            raise usage.UsageError(why) from None

    def _ownKeys(self) -> list[tuple[str, OwnKeys]]:
        """
        The C{--listen} descriptions of C{ssl:} listeners with keys of their
        own, with their files (the descriptions parse: L{checkEndpoint}).
        """
        found = []
        for description in self["listen"]:
            for layer in splitDescription(description)[1]:
                if isinstance(layer, OwnKeys):
                    found.append((description, layer))
        return found

    def _checkOwnKeys(self, o: ServerOptions) -> None:
        """
        Read the files of the C{ssl:} listeners with keys of their own now,
        with the server's TLS policy, as the server will at start.

        @raise usage.UsageError: Naming the listener, if one cannot be used.
        """
        for description, keys in self._ownKeys():
            from twisted_smtpd._serving.listenertls import ListenerTLS

            try:
                ListenerTLS(o, keys, description)
            except ValueError as e:
                raise usage.UsageError(f"--listen {description!r}: {reason(e)}") from None

    def _checkTLS(self, o: ServerOptions) -> None:
        """
        Read the certificate files now, as the server will at start.

        @raise usage.UsageError: If one cannot be read or used.
        """
        if o.tlsCiphers is not None:
            own = [keys for _, keys in self._ownKeys()]
            try:
                TLSPolicy(o.tlsCiphers, o.tlsMinVersion).checkCiphers(certificateKinds(o, own))
            except ValueError as e:
                raise usage.UsageError(f"--tls-ciphers: {reason(e)}") from None
        if o.certificate is None and o.caCertificates is None and not o.sniOptions:
            return
        if o.caCertificates is not None:
            try:
                checkReadable(o.caCertificates)
            except NotRegularFile as e:
                raise usage.UsageError(
                    f"--tls-ca: cannot read CA certificates {o.caCertificates}: {e}"
                ) from None
            except OSError as e:
                raise usage.UsageError(f"--tls-ca: {reason(e)}") from None
        if o.certificate is not None:
            # The certificate and its key alone first: an error then is
            # theirs, whatever the paths of the other files look like.
            try:
                ServerTLS(
                    o.certificate,
                    o.privateKey,
                    ciphers=o.tlsCiphers,
                    minVersion=o.tlsMinVersion,
                )
            except ValueError as e:
                why = reason(e)
                flag = "--tls-cert"
                if o.privateKey is not None and (
                    why.startswith(f"cannot read private key {o.privateKey}: ")
                    or why.endswith(f": it does not match {o.privateKey}")
                ):
                    flag = "--tls-key"
                raise usage.UsageError(f"{flag}: {why}") from None
        try:
            # Checked only: the server announces a self-signed certificate
            # when it starts, if a listener can serve it.
            ServerTLS.fromOptions(o, announce=False)
        except ValueError as e:
            why = reason(e)
            flag = (
                "--tls-ca"
                if why.startswith(("cannot read CA certificates ", "cannot use CA certificates "))
                else "--sni"
            )
            raise usage.UsageError(f"{flag}: {why}") from None

    def _handler(self, delivery: str, options: ServerOptions) -> ISMTPHandler:
        """
        The handler for C{delivery}, one of L{DELIVERIES}.

        @raise usage.UsageError: If it cannot be built.
        """
        value = self[delivery] if delivery not in ("sink", "debug") else None
        try:
            return HANDLERS[delivery](self, value, options)
        except usage.UsageError:
            raise
        except (OSError, ValueError, TypeError, ImportError, AttributeError) as e:
            # Hidden before it is quoted: repr() doubles a backslash or
            # escapes a quote in the password, which would then not match.
            hidden = withoutPassword(str(value))
            shown = withoutPassword(str(value), f"--{delivery} {hidden!r}: {reason(e)}")
            raise usage.UsageError(shown) from None


__all__ = ["Options", "SMTPDaemon", "makeService"]
