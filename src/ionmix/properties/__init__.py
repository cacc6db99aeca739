"""Liquid properties from MD: statistics, equation of state, studies, validation."""
