"""What lives in the state folder: the per-recipient journal, the suppression store, and the
one way both open their SQLite files (:mod:`dispatch.state.db`)."""
