"""Example model packages, shipped with geomlops as package data.

Each sub-folder is a complete model package (MLproject, environment, Dockerfile, STAC MLM
item). ``geomlops demo`` trains ``cloud-mask``; the folders are data, never imported by geomlops.
"""
