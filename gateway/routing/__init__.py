"""Which upstream takes an order: the catalog and its views, the pure routing rules
(`plan`), the shared candidate decision (`decide`), known balances, and reading
what a client sent (`params`)."""
