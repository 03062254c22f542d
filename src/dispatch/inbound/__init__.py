"""What comes back by mail: bounce reports (RFC 3464), complaints (RFC 5965), mailto
unsubscribes, auto-replies and the rest, read from standard input, a Maildir or an IMAP
mailbox (:mod:`.sources`, :mod:`.imap`), understood (:mod:`.reports`), traced to a reader
of a campaign (:mod:`.readers`) and acted on once (:mod:`.actions`); and the counts ``status``
shows per campaign (:mod:`.counts`)."""
