"""mbserver test suite: unit/ (no sockets) and integration/ (real server processes)."""
