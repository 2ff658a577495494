"""Stand-ins for vendor libraries that cannot be installed or have no hardware here."""
