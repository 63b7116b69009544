"""
twisted-smtpd: an embeddable SMTP and LMTP server for Twisted.
"""
