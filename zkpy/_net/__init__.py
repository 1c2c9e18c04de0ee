"""Private socket plumbing shared by the client and the member: the outbox that writes a
connection's bytes when a step ends, and the receiver that reads them with spin-before-wait.
Nothing here is public API."""
