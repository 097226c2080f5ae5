"""Lowered ops x device -> seconds and joules: roofline, efficiency, collectives, energy."""
