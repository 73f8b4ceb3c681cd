"""The staging protocol (docs/protocol.md) and what the client does with it: targets and their transports,
lock, clean-up, push, status and waiting, what an image runs, diff, save, rollout, rollback and the nightly
save's crontab entry."""
