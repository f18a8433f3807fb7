"""Who may call what: API keys for the prediction API, identities and tokens for the UI."""
