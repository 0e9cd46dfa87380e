"""Alembic environment: runs migrations on the connection :func:`geodata.migrate.upgrade` gives."""

from alembic import context
from geoalchemy2 import alembic_helpers

from geodata.models import Base

# Tables SpatiaLite keeps for itself; autogenerate must never try to drop them.
_SPATIALITE_TABLES = {
    "SpatialIndex", "KNN", "KNN2", "ElementaryGeometries", "data_licenses", "sql_statements_log",
    "spatial_ref_sys", "spatial_ref_sys_aux", "spatialite_history", "geometry_columns",
    "geometry_columns_auth", "geometry_columns_field_infos", "geometry_columns_statistics",
    "geometry_columns_time", "views_geometry_columns", "virts_geometry_columns",
    "views_geometry_columns_auth", "virts_geometry_columns_auth", "SE_external_graphics",
    "SE_raster_styles", "SE_vector_styles", "rl2map_configurations", "spatial_ref_sys_all",
    "vector_layers", "topologies", "networks", "raster_coverages",
    "wms_getcapabilities", "stored_procedures", "stored_variables", "iso_metadata",
}


def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table" and reflected and compare_to is None:
        # Only tables the models know are ours; everything else (SpatiaLite's catalogue,
        # PostGIS's spatial_ref_sys, idx_* virtual tables) is left alone.
        return False
    if type_ == "table" and (name in _SPATIALITE_TABLES or name.startswith("idx_")):
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_object=include_object,
    process_revision_directives=alembic_helpers.writer,
    render_item=alembic_helpers.render_item,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
