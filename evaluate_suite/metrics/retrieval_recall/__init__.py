"""Local `evaluate` metric module folder (the package marker lets it ship in wheels)."""
