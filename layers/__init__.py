"""The domain in plain geopandas/shapely/numpy, no Flask: communities and their numbers, the
redistricting engine, coverage, grid cells, incidents and their workflow. Reads and writes
layers through :mod:`geodata.store`."""
