"""MLflow tracking: the store, one run per job, secret filtering, the tracking server."""
