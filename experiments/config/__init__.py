"""Config schemas, validation, run identity and the launch environment."""
