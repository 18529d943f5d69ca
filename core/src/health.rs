//! Documents 001 and 003: the endpoint health state machine and the failure queue.
