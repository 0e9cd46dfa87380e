"""The domain in plain geopandas/shapely/numpy, no Flask, one package per capability: plans
(:mod:`layers.plans`), coverage (:mod:`layers.coverage`), grid cells (:mod:`layers.grid`),
incidents (:mod:`layers.incidents`), onboarding a city (:mod:`layers.onboarding`) and sample data
(:mod:`layers.sample_data`); the background job runner is :mod:`layers.worker`. Reads and writes
layers through :mod:`geodata.store`."""
