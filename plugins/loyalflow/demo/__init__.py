"""The demo business (Harbor & Pine Hotels) and its day-by-day simulation."""
