"""Keys, addresses, signing and the encrypted keystore."""
