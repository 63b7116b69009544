# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd smtpd} plugin: an SMTP/LMTP server from the command line.

Options and service construction live in L{twisted_smtpd._twistd.tap}, imported only
when the plugin runs.
"""

from twisted.application.service import ServiceMaker

smtpd = ServiceMaker("twisted-smtpd", "twisted_smtpd._twistd.tap", "SMTP/LMTP server.", "smtpd")
