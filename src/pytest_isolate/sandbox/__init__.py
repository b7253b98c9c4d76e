"""Inside the sandbox: namespaces, the filesystem snapshot, the network."""
