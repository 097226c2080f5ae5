"""Seconds x dependencies -> when each op runs, the step, and memory over the schedule."""
