"""Datasets and feature loading aligned to RecBole's internal item ids."""
