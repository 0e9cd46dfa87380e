"""Onboarding a city: imports, boundaries as they are, planning units from roads, the folder run."""
