"""`make bench`: performance of the artifact's own implementations against their physical limits."""
