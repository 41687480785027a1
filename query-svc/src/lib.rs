//! query-svc: the read model and PostQuery (in progress).
