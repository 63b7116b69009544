"""
Ready-made handlers.
"""

from twisted_smtpd.handlers._base import BaseHandler

__all__ = ["BaseHandler"]
