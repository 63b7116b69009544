"""
The C{twistd smtpd} layer: options, the service it runs, C{--workers}.
"""
