"""Sample data: the seeded demo district, a generated city as others hand it over, a synthetic country."""
