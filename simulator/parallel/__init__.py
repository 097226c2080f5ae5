"""One rank's graph of a parallel plan and its collectives: tensor, context, pipeline, data."""
