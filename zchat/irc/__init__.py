"""The IRC door (zchat/broker/doors.py)."""
