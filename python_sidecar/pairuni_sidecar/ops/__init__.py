"""Op modules: every module here is imported at start-up and registers its ops with @op."""
