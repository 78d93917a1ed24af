"""Distribution: the DataStore (listings, filesets), bundles, its HTTP server and client."""
