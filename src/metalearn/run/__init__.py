"""The pipeline's stale stages, several at once, on the devices Ray knows of."""
