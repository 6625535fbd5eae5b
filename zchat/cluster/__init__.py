"""Several brokers sharing rooms through Redis (docs/protocol.md §6.14, docs/deploy.md).

The store (zchat/store/redis.py) keeps every log in Redis and publishes each
append on the log's feed channel; the registry (``registry.py``) shares nicks,
sessions, presence and the brokers' lives; the feed (``feed.py``) brings each
broker the appends of the logs it follows, which the broker core delivers in
order and repairs from the store.
"""
