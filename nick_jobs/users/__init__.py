"""Users who may log in: accounts, password hashing, bearer tokens and the limit on
failed logins."""
