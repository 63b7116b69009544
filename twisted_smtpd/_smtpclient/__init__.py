"""
The SMTP/LMTP client the relaying handlers use.  It shares no server glue.
"""
