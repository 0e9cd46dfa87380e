"""Storage and file formats: models, engine, layer I/O, import/export, CRS, demo data."""
