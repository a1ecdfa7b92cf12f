"""The manager: the daemon process that owns the socket, the chains of snapshots and the watcher.

It never imports project code (nor pytest); it may use threads. Request path:
``server`` accepts a client, ``keys`` picks its chain, ``chain`` checks the file sets and hands
the client's fds to a spare request child forked from the deepest valid snapshot.
"""
