//! event-relay: drains the event streams into the read model (in progress).
