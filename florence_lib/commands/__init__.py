"""Small commands that belong to no layer of their own (environment report)."""
