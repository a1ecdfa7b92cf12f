"""The snapshot processes: a base (pytest and plugins imported), a session forked from it
(conftests, collection, session fixtures), and request children forked from either.

Everything here runs single-threaded: ``fork`` copies only the calling thread.
"""
