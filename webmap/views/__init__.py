"""The pages and API of each capability, one blueprint per module, named as in :mod:`layers`."""
