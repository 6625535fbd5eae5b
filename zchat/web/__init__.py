"""The web door (zchat/broker/doors.py)."""
