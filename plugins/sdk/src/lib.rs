//! SDK for writing pika-migrate filter plugins. The ABI is defined in a later step.
